package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errNoAnswer means a stat of a mountpoint did not return in time.
var errNoAnswer = errors.New("does not answer")

// probeWithin asks the file system at path whether it answers, giving up
// after timeout: a FUSE mount whose daemon is stopped would block forever.
// It uses statfs, which the kernel always sends to the daemon; a stat may be
// answered from the attribute cache of a mount whose daemon is dead.
func probeWithin(path string, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(path, &st)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return errNoAnswer
	}
}

// probeFdWithin is probeWithin for the file open at fd. The probe works
// on a duplicate of fd, which it closes itself whenever it returns.
func probeFdWithin(fd int, timeout time.Duration) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Fstatfs(dup, &st)
		unix.Close(dup)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return errNoAnswer
	}
}

// openMountRoot opens the root of the mount with id id (as
// /proc/self/mountinfo numbers it) at the absolute path mnt, as an O_PATH
// descriptor, following no symlink on the way: the path comes from the
// mount table, which shows none. It fails if the path leads elsewhere now.
// It never asks the file system (AT_STATX_DONT_SYNC): the mount may be
// a FUSE mount whose daemon is stopped.
func openMountRoot(mnt string, id int) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, mnt, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	var x unix.Statx_t
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &x)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if int(x.Mnt_id) != id || x.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("mountpoint %s: the mount there changed (id %d, not %d)", mnt, x.Mnt_id, id)
	}
	return fd, nil
}

// detachFd lazily unmounts the mount whose root is open at fd: the path
// /proc/self/fd/N leads to that very mount. A lazy unmount does not mind
// that the descriptor keeps the mount busy.
func detachFd(fd int, mnt string) error {
	if err := unix.Unmount("/proc/self/fd/"+strconv.Itoa(fd), unix.MNT_DETACH); err != nil {
		return fmt.Errorf("lazy unmount %s: %w", mnt, err)
	}
	return nil
}

// isDead says whether err is what a FUSE mount without a daemon answers.
func isDead(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// isBusy recognises "busy" from a direct unmount (an errno) and from
// fusermount3 (a message).
func isBusy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || strings.Contains(err.Error(), "busy")
}

// detach lazily unmounts mnt: it leaves the namespace at once and goes away
// when the last open file is closed. go-fuse has no lazy unmount. It goes
// by the path, which is right only for a user's daemon (fusermount3 checks
// the mount is the user's own); as root, mounts are detached through
// descriptors (fs.Mirror.Detach, detachFd).
func detach(mnt string) error {
	if os.Geteuid() == 0 {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("lazy unmount %s: %w", mnt, err)
		}
		return nil
	}
	out, err := exec.Command(fusermount(), "-uz", mnt).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -uz %s: %v: %s", mnt, err, oneLine(string(out)))
	}
	return nil
}

// fusermount returns the fusermount3 (or older fusermount) on PATH.
func fusermount() string {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// captureStderr runs fn with file descriptor 2 pointed at a pipe and returns
// what was written there: fusermount3 explains its failures on stderr, and
// that explanation belongs in the user's error message.
func captureStderr(fn func() error) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", fn()
	}
	defer r.Close()
	saved, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		w.Close()
		return "", fn()
	}
	unix.Dup3(int(w.Fd()), 2, 0)
	w.Close()
	ferr := fn()
	unix.Dup3(saved, 2, 0)
	unix.Close(saved)
	out, _ := io.ReadAll(r)
	return strings.TrimSpace(string(out)), ferr
}
