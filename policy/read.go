package policy

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxFileSize bounds a policy file: 100,000 hide patterns of 60 bytes fit,
// and a larger file (or an endless one such as /dev/zero) is a mistake.
const MaxFileSize = 8 << 20

// How long a file must have stood still before it is read, and how long a
// read waits for it to settle. An editor that saves by truncating and then
// writing leaves the file empty, or half-written, in between; an empty
// policy is a valid one that lifts read_only and every hide.
const (
	settleTime = 150 * time.Millisecond
	settleWait = 2 * time.Second
	retryEvery = 50 * time.Millisecond
)

// ReadFile reads name as the daemon reads all its inputs: a regular file
// only (no FIFO or device: opened O_NONBLOCK, checked on the descriptor),
// at most MaxFileSize, and only once it stands still (the
// same file, size and ctime before and after the read, and unchanged for
// settleTime). A file still changing after settleWait is an error.
func ReadFile(name string) ([]byte, error) {
	deadline := time.Now().Add(settleWait)
	for {
		b, steady, err := readOnce(name)
		if err != nil || steady {
			return b, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("policy %s: still being written after %v", name, settleWait)
		}
		time.Sleep(retryEvery)
	}
}

// readOnce reads name once; steady says the file did not change meanwhile
// and had not changed for settleTime before.
func readOnce(name string) (b []byte, steady bool, err error) {
	// A symlink is followed: configuration managers and Kubernetes'
	// ConfigMaps publish files that way, and whoever may change the link
	// may change the file. What it leads to is checked on the descriptor.
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, false, fmt.Errorf("policy %w", &os.PathError{Op: "open", Path: name, Err: err})
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var before, after, named unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		return nil, false, fmt.Errorf("policy %s: %w", name, err)
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, false, fmt.Errorf("policy %s: is %s, not a regular file", name, TypeName(before.Mode))
	}
	if before.Size > MaxFileSize {
		return nil, false, fmt.Errorf("policy %s: larger than %s", name, sizeName)
	}
	b, err = io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, false, fmt.Errorf("policy %s: %w", name, err)
	}
	if len(b) > MaxFileSize {
		return nil, false, fmt.Errorf("policy %s: larger than %s", name, sizeName)
	}
	if unix.Fstat(fd, &after) != nil || unix.Stat(name, &named) != nil {
		return b, false, nil // gone meanwhile: try again
	}
	age := time.Since(time.Unix(after.Ctim.Unix()))
	steady = sameFile(&before, &after) && sameFile(&after, &named) && int64(len(b)) == after.Size &&
		before.Ctim == after.Ctim && (age >= settleTime || age < -time.Second) // a clock set back must not stall us
	return b, steady, nil
}

const sizeName = "8 MiB"

func sameFile(a, b *unix.Stat_t) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Size == b.Size && a.Ctim == b.Ctim && a.Mtim == b.Mtim
}

// blank says whether a policy file holds no setting at all: only blank
// lines and comments.
func blank(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line[0] != '#' {
			return false
		}
	}
	return true
}

// TypeName names the kind of a file that is not a regular one, for the
// messages that refuse it (the daemon's own files use it too).
func TypeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("mode %o", mode&unix.S_IFMT)
}
