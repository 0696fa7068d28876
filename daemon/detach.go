package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/mounts"
)

// ExitLeftAlone is --detach-dead's answer when there is nothing of its to
// detach at the path: nothing mounted, another file system, or a mirrorfs
// mount that answers or hangs (a live daemon's).
const ExitLeftAlone = 5

// errLeftAlone marks the mounts --detach-dead must not touch.
var errLeftAlone = errors.New("left alone")

// detachDead is the hidden --detach-dead MNT, which mirrorfs-ctl stop runs
// (as root) after a kill -9: it detaches the dead mirrorfs mount at MNT.
// A path is resolved once, when its root is opened without following a
// symlink and checked to be the mount the table shows; the probe and the
// detach then act on that descriptor. A user who can write to a folder on
// the way cannot turn it to another mount between the check and the act,
// as `umount -l PATH` after a check of PATH would let her.
func detachDead(mnt string, env Env) int {
	err := detachDeadAt(mnt)
	switch {
	case err == nil:
		fmt.Fprintf(env.Stdout, "mirrorfs: detached the dead mount at %s\n", mnt)
		return ExitOK
	case errors.Is(err, errLeftAlone):
		fmt.Fprintf(env.Stderr, "mirrorfs: %v\n", err)
		return ExitLeftAlone
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(env.Stderr, "mirrorfs: %v\n", err)
		return ExitUsage
	}
	fmt.Fprintf(env.Stderr, "mirrorfs: %v\n", err)
	return ExitFailure
}

func detachDeadAt(mnt string) error {
	if !filepath.IsAbs(mnt) || filepath.Clean(mnt) != mnt {
		return usagef("--detach-dead: %q is not an absolute, clean path (as the mount table shows it)", mnt)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("--detach-dead needs root; a user detaches a mount of her own with fusermount3 -uz")
	}
	m, err := deadCandidate(mnt)
	if err != nil {
		return err
	}
	fd, err := mounts.OpenRoot(mnt, m.ID)
	if err != nil {
		return fmt.Errorf("%w: %v", errLeftAlone, err)
	}
	defer unix.Close(fd)
	if err := stillMirror(m); err != nil {
		return err
	}
	if err := probeInChild(mnt, fd, probeTimeout); !mounts.IsDead(err) {
		return fmt.Errorf("%w: the mirrorfs mount at %s is not dead (probe: %v)", errLeftAlone, mnt, orAnswers(err))
	}
	return mounts.DetachFd(fd, mnt)
}

// deadCandidate is the mirrorfs mount on top at mnt in the mount table.
func deadCandidate(mnt string) (mounts.Mount, error) {
	table, err := mounts.Read()
	if err != nil {
		return mounts.Mount{}, fmt.Errorf("mountinfo: %w", err)
	}
	m, ok := mounts.TopAt(table, mnt)
	switch {
	case !ok:
		return m, fmt.Errorf("%w: nothing is mounted at %s", errLeftAlone, mnt)
	case m.FSType != fs.FSType:
		return m, fmt.Errorf("%w: %s holds a %s mount, not a mirrorfs one", errLeftAlone, mnt, m.FSType)
	}
	return m, nil
}

// stillMirror checks, once its root is open, that the mount is still the
// one the table showed: a mount id is reused once its mount is gone, and
// the open descriptor now keeps it from going.
func stillMirror(m mounts.Mount) error {
	table, err := mounts.Read()
	if err != nil {
		return fmt.Errorf("mountinfo: %w", err)
	}
	if now, ok := mounts.TopAt(table, m.Mountpoint); !ok || now != m {
		return fmt.Errorf("%w: the mount at %s changed while it was opened", errLeftAlone, m.Mountpoint)
	}
	return nil
}

func orAnswers(err error) any {
	if err == nil {
		return "it answers"
	}
	return err
}
