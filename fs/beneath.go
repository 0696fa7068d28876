package fs

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A takeover (daemon/takeover.go) mounts the new mirror beneath the old
// one: move_mount(2) with MOVE_MOUNT_BENEATH (Linux 6.5) slides a mount
// under the one on top of a mountpoint, and once the old mount is detached
// (DetachAbove), the new one is on top, with no moment at which the
// mountpoint is empty. Files open through the old mount, and working
// folders in it, stay with the old mount and its daemon.

// moveMountBeneath is MOVE_MOUNT_BENEATH, which x/sys does not name yet.
const moveMountBeneath = 0x200

// ErrNoBeneath means the kernel cannot slide a mount beneath another
// (before Linux 6.5).
var ErrNoBeneath = errors.New("the kernel cannot mount beneath a mount (MOVE_MOUNT_BENEATH needs Linux 6.5)")

// mountBeneath mounts as mountKernel does, beneath the mount under, which
// must be the one on top at mountpoint. The folder holding the mountpoint
// is opened first, and the mount on top found from it: the mount slides
// under that very one, and the attachment keeps that very folder.
func mountBeneath(raw fuse.RawFileSystem, mountpoint string, mo *fuse.MountOptions, under MountID) (*Mirror, bool, error) {
	parent, err := openParent(mountpoint)
	if err != nil {
		return nil, true, err
	}
	top, rootmode, err := openTop(parent, mountpoint, under)
	if err != nil {
		unix.Close(parent)
		return nil, true, err
	}
	defer unix.Close(top)
	slid := false
	m, ended, err := serveAttached(raw, rootmode, mo, func(mnt int) (*attachment, error) {
		slid = true
		return slideUnder(mnt, top, parent, mountpoint)
	}, mountpoint)
	if !slid {
		unix.Close(parent)
	}
	return m, ended, err
}

// openTop opens the root of the mount on top at mountpoint, from the
// folder open at parent and following no symlink, and checks that it is
// the mount want.
func openTop(parent int, mountpoint string, want MountID) (fd int, rootmode uint32, err error) {
	fd, err = unix.Openat2(parent, filepath.Base(mountpoint), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return -1, 0, fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	var x unix.Statx_t
	if err := statxMount(fd, unix.STATX_TYPE|unix.STATX_MODE, &x); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	id, err := mountIDOf(fd)
	if err == nil && (x.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 || id != want) {
		err = fmt.Errorf("the old daemon's mount (id %d) is not the one on top (id %d)", want.ID, id.ID)
	}
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	return fd, uint32(x.Mode) & unix.S_IFMT, nil
}

// slideUnder moves the unattached mount mnt beneath the mount whose root
// is open at top; the attachment takes parent, on success and failure
// alike. Once slid under, a mount can be neither unmounted nor moved
// without the one on top of it: on a failure after that, it stays there,
// and ends as a dead mount once this process exits; the old daemon
// detaches it when it stops (daemon: clearBelow).
func slideUnder(mnt, top, parent int, mountpoint string) (*attachment, error) {
	err := unix.MoveMount(mnt, "", top, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH|moveMountBeneath)
	if errors.Is(err, unix.EINVAL) && !kernelAtLeast(6, 5) {
		err = fmt.Errorf("%w: %w", ErrNoBeneath, err)
	}
	if err == nil {
		var a *attachment
		if a, err = newAttachment(mnt, parent, mountpoint); err == nil {
			return a, nil
		}
	}
	unix.Close(parent)
	return nil, fmt.Errorf("move_mount beneath %s: %w", mountpoint, err)
}

// kernelAtLeast says whether the running kernel is major.minor or later:
// move_mount answers EINVAL both for a flag it does not know and for a
// mount it will not move there.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return true
	}
	var ma, mi int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi)
	return ma > major || ma == major && mi >= minor
}

// DetachAbove detaches lazily the mount above the mirror, if it is the
// mount under (the old daemon's): the switch of a takeover, made by the
// new daemon itself, so that it happens only while the new daemon lives.
func (m *Mirror) DetachAbove(under MountID) error {
	if err := m.at.detachTop(under); err != nil {
		return fmt.Errorf("detaching the old mount at %s: %w", m.mountpoint, err)
	}
	return nil
}

// OnTop says whether the mirror is still the mount on top at its
// mountpoint (a takeover detaches it from there).
func (m *Mirror) OnTop() bool { return m.at != nil && m.at.isOurs() == nil }

// Surface finishes a mount made beneath another (Options.Beneath) once
// that one has left: it checks that the mirror is the mount on top at its
// mountpoint now, and notes its line in the mount table.
func (m *Mirror) Surface() error {
	if err := m.at.landedAt(m.mountpoint); err != nil {
		return fmt.Errorf("mountpoint %s: ours is not the mount on top there: %w", m.mountpoint, err)
	}
	e, err := m.findEntry()
	if err != nil {
		return err
	}
	m.entry = e
	return nil
}

// ID is the mirror's mount id, as a takeover checks it.
func (m *Mirror) ID() (MountID, bool) {
	if m.at == nil {
		return MountID{}, false
	}
	return m.at.id, true
}
