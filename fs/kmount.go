package fs

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mounting as root goes through the kernel's mount API, on descriptors: the
// mountpoint is opened once, without following a symlink anywhere in its
// path, checked on that descriptor, and the mount is moved onto that very
// folder. A path handed to mount(2) is resolved again when the kernel
// mounts, so whoever can swap one of its folders for a symlink in between
// chooses where root mounts.

// maxWrite is go-fuse's default MaxWrite, set explicitly so that the kernel
// is told the same max_read go-fuse sizes its buffers for.
const maxWrite = 128 << 10

// openMountpoint opens the folder at the absolute path mnt as an O_PATH
// descriptor, following no symlink on the way (a path the caller made
// symlink-free; a symlink found now was put there since), and checks on
// that descriptor that it is a folder and not already a mountpoint.
func openMountpoint(mnt string) (fd int, rootmode uint32, err error) {
	if !filepath.IsAbs(mnt) || filepath.Clean(mnt) != mnt || mnt == "/" {
		return -1, 0, fmt.Errorf("mountpoint %s: not a clean absolute path below /", mnt)
	}
	fd, err = unix.Openat2(unix.AT_FDCWD, mnt, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	switch {
	case errors.Is(err, unix.ELOOP):
		return -1, 0, fmt.Errorf("mountpoint %s: a symlink is in its path now: %w", mnt, err)
	case errors.Is(err, unix.ENOTDIR):
		return -1, 0, fmt.Errorf("mountpoint %s is not a directory: %w", mnt, err)
	case err != nil:
		return -1, 0, fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	var x unix.Statx_t
	if err := statxMount(fd, unix.STATX_TYPE|unix.STATX_MODE, &x); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if x.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && x.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("mountpoint %s is already a mountpoint", mnt)
	}
	return fd, uint32(x.Mode) & unix.S_IFMT, nil
}

// statxMount stats the file open at fd for what the mount code needs. It
// never asks a FUSE daemon (AT_STATX_DONT_SYNC): the file may be the root
// of our own mount, or of a dead or stopped one.
func statxMount(fd int, mask int, x *unix.Statx_t) error {
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, mask, x)
}

// fuseParam is one fsconfig call: a flag when value is "".
type fuseParam struct{ key, value string }

// fuseParams turns go-fuse's mount options into what the mount API takes:
// the parameters go-fuse's direct mount passes in mount(2)'s data, and the
// mount attributes it passes as flags: nosuid and nodev unless suid or dev
// is asked for, as go-fuse and mount(8) do.
func fuseParams(dev int, rootmode uint32, mo *fuse.MountOptions) ([]fuseParam, int) {
	source := mo.FsName
	if source == "" {
		source = mo.Name
	}
	ps := []fuseParam{
		{"source", source},
		{"subtype", mo.Name},
		{"fd", strconv.Itoa(dev)},
		{"rootmode", strconv.FormatUint(uint64(rootmode), 8)},
		{"user_id", strconv.Itoa(unix.Geteuid())},
		{"group_id", strconv.Itoa(unix.Getegid())},
		{"max_read", strconv.Itoa(mo.MaxWrite)},
	}
	attrs := unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	for _, o := range mo.Options {
		switch o {
		case "nosuid":
			attrs |= unix.MOUNT_ATTR_NOSUID
		case "suid":
			attrs &^= unix.MOUNT_ATTR_NOSUID
		case "nodev":
			attrs |= unix.MOUNT_ATTR_NODEV
		case "dev":
			attrs &^= unix.MOUNT_ATTR_NODEV
		case "noexec":
			attrs |= unix.MOUNT_ATTR_NOEXEC
		case "exec":
			attrs &^= unix.MOUNT_ATTR_NOEXEC
		case "ro":
			attrs |= unix.MOUNT_ATTR_RDONLY
			ps = append(ps, fuseParam{"ro", ""})
		default:
			k, v, _ := strings.Cut(o, "=")
			ps = append(ps, fuseParam{k, v})
		}
	}
	if mo.AllowOther {
		ps = append(ps, fuseParam{"allow_other", ""})
	}
	return ps, attrs
}

// newFuseMount makes a FUSE mount served through the /dev/fuse descriptor
// dev, not attached anywhere yet: it returns the fsmount descriptor, which
// refers to the mount's root. Closed before being attached, it takes the
// mount with it.
func newFuseMount(dev int, rootmode uint32, mo *fuse.MountOptions) (int, error) {
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	ps, attrs := fuseParams(dev, rootmode, mo)
	for _, p := range ps {
		if p.value == "" {
			err = unix.FsconfigSetFlag(fsfd, p.key)
		} else {
			err = unix.FsconfigSetString(fsfd, p.key, p.value)
		}
		if err != nil {
			return -1, fmt.Errorf("fsconfig %s: %w%s", p.key, err, kernelSays(fsfd))
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w%s", err, kernelSays(fsfd))
	}
	mnt, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, fmt.Errorf("fsmount: %w%s", err, kernelSays(fsfd))
	}
	return mnt, nil
}

// kernelSays returns the messages the kernel left on an fsopen descriptor.
func kernelSays(fsfd int) string {
	var said []string
	buf := make([]byte, 256)
	for range 8 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		said = append(said, strings.TrimSpace(string(buf[:n])))
	}
	if len(said) == 0 {
		return ""
	}
	return " (" + strings.Join(said, "; ") + ")"
}

// procFd names the descriptor fd in a path the kernel resolves to the very
// file it refers to.
func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// attach moves the unattached mount mnt onto the folder open at dir, and
// checks it landed at the path mountpoint: the folder may have been renamed
// since it was opened. Once attached, the mount's folder cannot be renamed
// or removed. On failure nothing stays mounted.
func attach(mnt, dir int, mountpoint string) (*attachment, error) {
	parent, err := openParent(mountpoint)
	if err != nil {
		return nil, err
	}
	err = unix.MoveMount(mnt, "", dir, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if err != nil {
		unix.Close(parent)
		return nil, fmt.Errorf("move_mount to %s: %w", mountpoint, err)
	}
	a, err := newAttachment(mnt, parent, mountpoint)
	if err == nil {
		err = a.landedAt(mountpoint)
	}
	if err != nil {
		// The descriptor is the mount itself: this detaches ours, and only ours.
		unix.Unmount(procFd(mnt), unix.MNT_DETACH)
		unix.Close(parent)
		return nil, err
	}
	return a, nil
}
