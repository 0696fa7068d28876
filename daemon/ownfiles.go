package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// The daemon's own files (pidfile, lock, state, log) live in folders that
// only root and the daemon's user may write to: anyone else who can create
// names there can swap a file for a FIFO (a log that blocks the daemon), a
// decoy pidfile, or a symlink. A sticky folder such as /tmp is refused too:
// another user can still create the name before we do. The folder is opened
// once and checked on its descriptor; the files are opened relative to it.

// openOwnDir creates dir if needed (mode 0755) and opens it (O_PATH), or
// refuses it.
func openOwnDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	if err := checkOwnDir(dir, &st); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkOwnDir(dir string, st *unix.Stat_t) error {
	euid := uint32(os.Geteuid())
	switch perm := st.Mode & 0o7777; {
	case st.Uid != 0 && st.Uid != euid:
		return fmt.Errorf("folder %s belongs to uid %d, not to root or us; refusing it", dir, st.Uid)
	case perm&0o022 != 0 && perm&unix.S_ISVTX != 0:
		return fmt.Errorf("folder %s is writable by others (mode %04o; sticky, but others may create our names first); refusing it", dir, perm)
	case perm&0o022 != 0:
		return fmt.Errorf("folder %s is writable by others (mode %04o); refusing it", dir, perm)
	}
	return nil
}

// checkOwnFile refuses what the daemon must not use as one of its files: a
// symlink, anything but a regular file, a file of another user, or one
// with permission bits beyond maxPerm.
func checkOwnFile(st *unix.Stat_t, maxPerm uint32) error {
	perm := st.Mode & 0o7777
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return errors.New("is a symlink; refusing to follow it")
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("is not a regular file (%s)", policy.TypeName(st.Mode))
	case st.Uid != uint32(os.Geteuid()):
		return fmt.Errorf("belongs to uid %d, not to us; refusing it", st.Uid)
	case perm&^maxPerm&0o022 != 0:
		return fmt.Errorf("is writable by others (mode %04o); refusing it", perm)
	case perm&^maxPerm != 0:
		return fmt.Errorf("has mode %04o, more than %04o; refusing it", perm, maxPerm)
	}
	return nil
}

// statOwnFile checks name in dir, if it exists, before it is opened (for a
// clear refusal: opening a FIFO could block, opening a symlink gives ELOOP).
func statOwnFile(dir *os.File, name string, maxPerm uint32) error {
	var st unix.Stat_t
	err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	return checkOwnFile(&st, maxPerm)
}

// openOwnFile opens name in dir (flags plus O_NOFOLLOW, O_NONBLOCK,
// O_CLOEXEC; created with mode perm) and checks the file on its
// descriptor; O_NONBLOCK is cleared once it is known to be a regular file.
func openOwnFile(dir *os.File, name string, flags int, perm, maxPerm uint32) (*os.File, error) {
	if err := statOwnFile(dir, name, maxPerm); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(int(dir.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, perm)
	if errors.Is(err, unix.ELOOP) {
		return nil, errors.New("is a symlink; refusing to follow it")
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	if err == nil {
		err = checkOwnFile(&st, maxPerm)
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}
