package mounts

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// None of these helpers sends a request to the file system mounted: they
// act through the mount table, the mount syscalls and fusectl, so that they
// are safe on a mount whose server is stopped, dead, or this very process.

// OpenRoot opens the root of the mount with id id (as the table numbers it)
// at the absolute path mnt, as an O_PATH descriptor, following no symlink
// on the way: the path comes from the mount table, which shows none. It
// fails if the path leads elsewhere now. It never asks the file system
// (AT_STATX_DONT_SYNC).
func OpenRoot(mnt string, id int) (int, error) {
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

// DetachFd lazily unmounts the mount whose root is open at fd: the path
// /proc/self/fd/N leads to that very mount. A lazy unmount does not mind
// that the descriptor keeps the mount busy. mnt is for the message.
func DetachFd(fd int, mnt string) error {
	if err := unix.Unmount("/proc/self/fd/"+strconv.Itoa(fd), unix.MNT_DETACH); err != nil {
		return fmt.Errorf("lazy unmount %s: %w", mnt, err)
	}
	return nil
}

// DetachPath lazily unmounts mnt by its path, through fusermount3 -uz,
// which unmounts only a mount of the caller's own, with its own checks:
// right for a user's daemon. Root detaches through descriptors (DetachFd).
func DetachPath(mnt string) error {
	out, err := exec.Command(Fusermount(), "-uz", mnt).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -uz %s: %v: %s", mnt, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Fusermount returns the fusermount3 (or older fusermount) on PATH, or ""
// when there is none.
func Fusermount() string {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// IsBusy recognises "busy" from a direct unmount (an errno) and from
// fusermount3 (a message).
func IsBusy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || (err != nil && strings.Contains(err.Error(), "busy"))
}

// IsDead says whether err is what a FUSE mount without a server answers.
func IsDead(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// fusectl is where the kernel shows each FUSE connection, by the minor
// number of the mount's device.
const fusectl = "/sys/fs/fuse/connections"

// connDir is m's folder under fusectl, mounting fusectl if need be.
func connDir(m Mount) (string, error) {
	major, minor, ok := strings.Cut(m.Dev, ":")
	if !ok || major != "0" {
		return "", fmt.Errorf("mount %s: %q is not a FUSE connection", m.Mountpoint, m.Dev)
	}
	if _, err := strconv.Atoi(minor); err != nil {
		return "", fmt.Errorf("mount %s: %q is not a FUSE connection", m.Mountpoint, m.Dev)
	}
	dir := fusectl + "/" + minor
	if _, err := os.Stat(dir); err != nil {
		unix.Mount("fusectl", fusectl, "fusectl", 0, "")
	}
	return dir, nil
}

// Abort ends m's FUSE connection: every request waiting and to come fails,
// and the server's reads of /dev/fuse end.
func Abort(m Mount) error {
	dir, err := connDir(m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dir+"/abort", []byte("1"), 0); err != nil {
		return fmt.Errorf("abort the FUSE connection of %s: %w", m.Mountpoint, err)
	}
	return nil
}

// Waiting is the number of requests on m's connection that wait for an
// answer (queued or being served).
func Waiting(m Mount) (int, error) {
	dir, err := connDir(m)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(dir + "/waiting")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// go-fuse's words for fusermount3's failures: a mount reports the raw wait
// status ("fusermount exited with code 256\n"), an unmount wraps what the
// helper said around Go's error ("...busy\n (code exit status 1)\n").
var (
	helperMountFailed   = regexp.MustCompile(`^fusermount exited with code (\d+)\s*$`)
	helperUnmountFailed = regexp.MustCompile(`(?s)^\s*(.*?)\s*\(code (.*)\)\s*$`)
)

// HelperError rewrites go-fuse's reports of a failed fusermount3 into one
// line that says how it ended: "fusermount3 exited with status 1", and
// for an unmount what it said followed by "(exit status 1)". "busy" stays
// in it for IsBusy. Other errors pass unchanged.
func HelperError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if m := helperMountFailed.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		ws := syscall.WaitStatus(n)
		if ws.Signaled() {
			return fmt.Errorf("fusermount3 killed by %v", ws.Signal())
		}
		return fmt.Errorf("fusermount3 exited with status %d", ws.ExitStatus())
	}
	if m := helperUnmountFailed.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s (%s)", strings.Join(strings.Fields(m[1]), " "), m[2])
	}
	return err
}
