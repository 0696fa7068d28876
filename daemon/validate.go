package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"mirrorfs/mounts"
)

// checkSource makes c.Source its real path and checks it is a readable folder.
func (c *Config) checkSource() error {
	fi, err := os.Stat(c.Source)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("source %s does not exist", c.Source)
	case err != nil:
		return fmt.Errorf("source %s: %w", c.Source, err)
	case !fi.IsDir():
		return fmt.Errorf("source %s is not a directory", c.Source)
	}
	if err := unix.Access(c.Source, unix.R_OK|unix.X_OK); err != nil {
		return fmt.Errorf("source %s is not readable: %w", c.Source, err)
	}
	real, err := filepath.EvalSymlinks(c.Source)
	if err != nil {
		return fmt.Errorf("source %s: %w", c.Source, err)
	}
	c.Source = real
	return nil
}

// checkMountpointPath makes c.Mountpoint the path the kernel will list in
// mountinfo and checks where it lies. It resolves only the parent folder:
// the mountpoint itself may be a dead mount that must not be touched yet.
func (c *Config) checkMountpointPath() error {
	parent, err := filepath.EvalSymlinks(filepath.Dir(c.Mountpoint))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mountpoint %s does not exist", c.Mountpoint)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", c.Mountpoint, err)
	}
	mnt := filepath.Join(parent, filepath.Base(c.Mountpoint))
	switch {
	case mnt == c.Source:
		return fmt.Errorf("mountpoint %s is the source itself", c.Mountpoint)
	case within(mnt, c.Source):
		return fmt.Errorf("mountpoint %s is inside the source %s (the mirror would contain itself)", c.Mountpoint, c.Source)
	case within(c.Source, mnt):
		return fmt.Errorf("source %s is inside the mountpoint %s (the mount would hide it)", c.Source, c.Mountpoint)
	}
	c.Mountpoint = mnt
	return nil
}

// within says whether path lies strictly below dir.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// checkMountpointDir checks an unmounted mountpoint is a folder. It is the
// first answer, with a clear message; as root the mount checks again on the
// descriptor of the folder it mounts on (fs/kmount.go), since the path may
// lead elsewhere by then. It opens mnt O_PATH and asks only the kernel's
// cache: if a mount of ours came back there meanwhile, nothing here sends
// it a request.
func checkMountpointDir(mnt string) error {
	fd, err := unix.Open(mnt, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist", mnt)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	defer unix.Close(fd)
	var x unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &x); err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	switch x.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return nil
	case unix.S_IFLNK:
		target, _ := os.Readlink(mnt)
		return fmt.Errorf("mountpoint %s is a symlink (to %s); give the directory itself", mnt, target)
	}
	return fmt.Errorf("mountpoint %s is not a directory", mnt)
}

// checkFuse checks the kernel device and, for users, the setuid helper.
func checkFuse() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse (%v): load the fuse module or give the container the device", err)
	}
	if os.Geteuid() != 0 && mounts.Fusermount() == "" {
		return errors.New("fusermount3 not found on PATH: install fuse3 (only root mounts without it)")
	}
	return nil
}
