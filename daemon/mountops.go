package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
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
// when the last open file is closed. go-fuse has no lazy unmount.
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
