package fs

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotMounted means the mirror is no longer mounted where it was attached
// (unmounted by someone else): there is nothing of ours there to unmount.
var ErrNotMounted = errors.New("the mirror is no longer mounted there")

// attachment is where a mount made through the mount API sits: the folder
// it is mounted on, named by a descriptor of that folder's parent and its
// name there, and the mount's id. It holds no descriptor of the mount
// itself: one would make every plain unmount of it fail as busy, ours and
// an administrator's alike. The name is stable: the kernel refuses to
// rename or remove a mountpoint, and the parent descriptor follows its
// folder wherever it is moved.
type attachment struct {
	mu      sync.Mutex
	parent  int    // O_PATH; -1 once we unmounted
	name    string // the mountpoint's name in parent
	id      MountID
	tableID int // the id /proc/self/mountinfo shows
}

// MountID tells mounts apart: the unique id where the kernel has one
// (6.8+), else the id /proc/self/mountinfo shows, which is reused.
type MountID struct {
	ID     uint64 `json:"id"`
	Unique bool   `json:"unique"`
}

// mountIDOf returns the id of the mount the file open at fd is on.
func mountIDOf(fd int) (MountID, error) {
	var x unix.Statx_t
	if err := statxMount(fd, unix.STATX_MNT_ID_UNIQUE, &x); err != nil {
		return MountID{}, err
	}
	if x.Mask&unix.STATX_MNT_ID_UNIQUE != 0 {
		return MountID{x.Mnt_id, true}, nil
	}
	if err := statxMount(fd, unix.STATX_MNT_ID, &x); err != nil {
		return MountID{}, err
	}
	return MountID{x.Mnt_id, false}, nil
}

// tableID returns the id /proc/self/mountinfo shows for the mount the file
// open at fd is on.
func tableID(fd int) (int, error) {
	var x unix.Statx_t
	if err := statxMount(fd, unix.STATX_MNT_ID, &x); err != nil {
		return 0, err
	}
	return int(x.Mnt_id), nil
}

// newAttachment notes where the mount whose root is open at mnt is
// attached: on the folder name in the folder open at parent, which it
// keeps. The parent is not found from the mount (".." of its root): a walk
// from our own root asks our daemon for the root's attributes (the
// permission check of the walk), a request to our own mount, which the
// daemon never makes.
func newAttachment(mnt, parent int, mountpoint string) (*attachment, error) {
	id, err := mountIDOf(mnt)
	if err != nil {
		return nil, fmt.Errorf("mount id: %w", err)
	}
	tid, err := tableID(mnt)
	if err != nil {
		return nil, fmt.Errorf("mount id: %w", err)
	}
	return &attachment{parent: parent, name: filepath.Base(mountpoint), id: id, tableID: tid}, nil
}

// openParent opens the folder holding the mountpoint, following no
// symlink.
func openParent(mountpoint string) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, filepath.Dir(mountpoint), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("the folder holding %s: %w", mountpoint, err)
	}
	return fd, nil
}

// landedAt checks that the mount is the one visible at the path mountpoint.
func (a *attachment) landedAt(mountpoint string) error {
	waitRenames(a.parent)
	if err := a.isOurs(); err != nil {
		return fmt.Errorf("mountpoint %s was moved while mounting: %w", mountpoint, err)
	}
	dir, err := unix.Openat2(unix.AT_FDCWD, filepath.Dir(mountpoint), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return fmt.Errorf("mountpoint %s was moved while mounting: %w", mountpoint, err)
	}
	defer unix.Close(dir)
	if !sameFd(dir, a.parent) {
		return fmt.Errorf("mountpoint %s was moved while mounting", mountpoint)
	}
	return nil
}

// waitRenames returns once no rename that began before it is still under
// way in the folder open at dir. A rename checks that it moves no
// mountpoint before it moves anything: one that checked just before the
// mount was attached can still move the mountpoint afterwards, and until it
// ends a check of the name proves nothing. A rename holds its folders'
// locks throughout, and a lookup the kernel has not cached (a name nobody
// used) waits for the folder's lock; later renames see the mountpoint and
// fail.
func waitRenames(dir int) {
	var st unix.Stat_t
	name := fmt.Sprintf(".mirrorfs-%d-%d", unix.Getpid(), time.Now().UnixNano())
	unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW)
}

// sameFd says whether two descriptors are the same file on the same mount.
func sameFd(a, b int) bool {
	var x, y unix.Statx_t
	mask := unix.STATX_INO | unix.STATX_MNT_ID
	if statxMount(a, mask, &x) != nil || statxMount(b, mask, &y) != nil {
		return false
	}
	return x.Ino == y.Ino && x.Dev_major == y.Dev_major && x.Dev_minor == y.Dev_minor && x.Mnt_id == y.Mnt_id
}

// isOurs checks that the top mount at the mountpoint's name is ours.
func (a *attachment) isOurs() error { return a.topIs(a.id) }

// topIs checks that the top mount at the mountpoint's name is id.
func (a *attachment) topIs(want MountID) error {
	fd, err := unix.Openat(a.parent, a.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotMounted, err)
	}
	defer unix.Close(fd)
	id, err := mountIDOf(fd)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotMounted, err)
	}
	if id != want {
		return ErrNotMounted
	}
	return nil
}

// detachTop detaches lazily the mount on top at the mountpoint if it is
// the mount id (for a takeover: the old daemon's, above ours). As in
// unmount, the path names it only through descriptors.
func (a *attachment) detachTop(id MountID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.parent < 0 {
		return ErrNotMounted
	}
	return a.unmountTop(id, unix.MNT_DETACH)
}

// unmountTop unmounts the mount on top at the mountpoint if it is id; the
// caller holds a.mu.
func (a *attachment) unmountTop(id MountID, flags int) error {
	if err := a.topIs(id); err != nil {
		return err
	}
	return unix.Unmount(a.path(), flags|unix.UMOUNT_NOFOLLOW)
}

// path names the mountpoint through the parent's descriptor: resolving it
// crosses into whatever is mounted on top there, and nothing else.
func (a *attachment) path() string { return procFd(a.parent) + "/" + a.name }

// unmount unmounts the mount if it is still the one on top at its
// mountpoint; flags is 0 or MNT_DETACH. The path names the mount only
// through descriptors, and its last step is not followed if it is a
// symlink; between the check and the unmount only someone allowed to
// mount there could stack a mount on ours.
func (a *attachment) unmount(flags int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.parent < 0 {
		return nil
	}
	if err := a.unmountTop(a.id, flags); err != nil {
		return err
	}
	unix.Close(a.parent)
	a.parent = -1
	return nil
}
