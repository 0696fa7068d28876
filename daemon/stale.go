package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/mounts"
)

// clearMountpoint makes sure nothing is mounted at the mountpoint. A dead
// mirrorfs mount (its daemon killed: "Transport endpoint is not connected")
// is ours to recover, since we hold the pidfile lock: it is detached lazily.
// Anything else mounted there is refused.
func clearMountpoint(cfg *Config, log *slog.Logger) error {
	mnt := cfg.Mountpoint
	for tries := 0; ; tries++ {
		table, err := mounts.Read()
		if err != nil {
			return fmt.Errorf("mountinfo: %w", err)
		}
		top, mounted := mounts.TopAt(table, mnt)
		if !mounted {
			return checkMountpointDir(mnt)
		}
		if top.FSType != fs.FSType {
			return fmt.Errorf("mountpoint %s is already a mountpoint (%s from %s)", mnt, top.FSType, top.Source)
		}
		if tries == 8 {
			return fmt.Errorf("mountpoint %s: stale mirrorfs mounts keep coming back", mnt)
		}
		if err := recoverStale(top, cfg.Pidfile, log); err != nil {
			return err
		}
	}
}

// recoverStale detaches a mirrorfs mount whose daemon is gone. Whether it
// answers is asked by a child process (probe.go): a thread of ours never
// waits on a FUSE mount.
func recoverStale(m mounts.Mount, pidfile string, log *slog.Logger) error {
	s, err := openStale(m)
	if err != nil {
		return err
	}
	defer s.close()
	err = probeInChild(s.path, s.fd, probeTimeout)
	switch {
	case err == nil:
		return fmt.Errorf("mountpoint %s is already served by another mirrorfs (not the one with pidfile %s)", m.Mountpoint, pidfile)
	case errors.Is(err, errNoAnswer):
		return fmt.Errorf("mountpoint %s is a mirrorfs mount that does not answer (its daemon stopped?)", m.Mountpoint)
	case !mounts.IsDead(err):
		return fmt.Errorf("mountpoint %s: %w", m.Mountpoint, err)
	}
	if err := s.detach(); err != nil {
		return fmt.Errorf("recovering the dead mount at %s: %w", m.Mountpoint, err)
	}
	log.Warn("recovered a dead mount left by a previous daemon", "mountpoint", m.Mountpoint, "source", m.Source, "mount_id", m.ID)
	return nil
}

// staleMount is a mount found in the mount table, to probe and detach. As
// root it is held by a descriptor of its root, opened without following a
// symlink and checked to be that mount: probe and detach act on that very
// mount, not on whatever its path leads to by then. A user's daemon goes by
// the path: fusermount3 -uz unmounts only a mount of the user's own, with
// its own checks.
type staleMount struct {
	path     string
	fd       int // -1 for a user's daemon
	detached bool
}

func openStale(m mounts.Mount) (*staleMount, error) {
	if os.Geteuid() != 0 {
		return &staleMount{path: m.Mountpoint, fd: -1}, nil
	}
	fd, err := mounts.OpenRoot(m.Mountpoint, m.ID)
	if err != nil {
		return nil, err
	}
	return &staleMount{path: m.Mountpoint, fd: fd}, nil
}

func (s *staleMount) detach() error {
	if s.fd < 0 {
		return mounts.DetachPath(s.path)
	}
	err := mounts.DetachFd(s.fd, s.path)
	s.detached = err == nil
	return err
}

// close lets go of the mount's root. Once the mount is detached, ours is
// likely its last reference: the close then tears its file system down,
// and the kernel waits for a grace period there, seconds on a loaded
// machine. That is no step of the start: the close runs on a goroutine.
func (s *staleMount) close() {
	switch {
	case s.fd < 0:
	case s.detached:
		go unix.Close(s.fd)
	default:
		unix.Close(s.fd)
	}
}
