package daemon

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// probeTimeout bounds the probe of a mountpoint found in the mount table.
const probeTimeout = 2 * time.Second

// clearMountpoint makes sure nothing is mounted at the mountpoint. A dead
// mirrorfs mount (its daemon killed: "Transport endpoint is not connected")
// is ours to recover, since we hold the pidfile lock: it is detached lazily.
// Anything else mounted there is refused.
func (d *daemon) clearMountpoint() error {
	mnt := d.cfg.Mountpoint
	for tries := 0; ; tries++ {
		mounts, err := readMounts()
		if err != nil {
			return fmt.Errorf("mountinfo: %w", err)
		}
		top, mounted := topMountAt(mounts, mnt)
		if !mounted {
			return checkMountpointDir(mnt)
		}
		if top.FSType != FSType {
			return fmt.Errorf("mountpoint %s is already a mountpoint (%s from %s)", mnt, top.FSType, top.Source)
		}
		if tries == 8 {
			return fmt.Errorf("mountpoint %s: stale mirrorfs mounts keep coming back", mnt)
		}
		if err := d.recoverStale(top); err != nil {
			return err
		}
	}
}

// recoverStale detaches a mirrorfs mount whose daemon is gone.
func (d *daemon) recoverStale(m Mount) error {
	s, err := openStale(m)
	if err != nil {
		return err
	}
	defer s.close()
	err = s.probe()
	switch {
	case err == nil:
		return fmt.Errorf("mountpoint %s is already served by another mirrorfs (not the one with pidfile %s)", m.Mountpoint, d.cfg.Pidfile)
	case err == errNoAnswer:
		return fmt.Errorf("mountpoint %s is a mirrorfs mount that does not answer (its daemon stopped?)", m.Mountpoint)
	case !isDead(err):
		return fmt.Errorf("mountpoint %s: %w", m.Mountpoint, err)
	}
	if err := s.detach(); err != nil {
		return fmt.Errorf("recovering the dead mount at %s: %w", m.Mountpoint, err)
	}
	d.log.Warn("recovered a dead mount left by a previous daemon", "mountpoint", m.Mountpoint, "source", m.Source, "mount_id", m.ID)
	return nil
}

// staleMount is a mount found in the mount table, to probe and detach. As
// root it is held by a descriptor of its root, opened without following a
// symlink and checked to be that mount: probe and detach act on that very
// mount, not on whatever its path leads to by then. A user's daemon goes by
// the path: fusermount3 -uz unmounts only a mount of the user's own, with
// its own checks.
type staleMount struct {
	path string
	fd   int // -1 for a user's daemon
}

func openStale(m Mount) (*staleMount, error) {
	if os.Geteuid() != 0 {
		return &staleMount{path: m.Mountpoint, fd: -1}, nil
	}
	fd, err := openMountRoot(m.Mountpoint, m.ID)
	if err != nil {
		return nil, err
	}
	return &staleMount{path: m.Mountpoint, fd: fd}, nil
}

func (s *staleMount) probe() error {
	if s.fd < 0 {
		return probeWithin(s.path, probeTimeout)
	}
	return probeFdWithin(s.fd, probeTimeout)
}

func (s *staleMount) detach() error {
	if s.fd < 0 {
		return detach(s.path)
	}
	return detachFd(s.fd, s.path)
}

func (s *staleMount) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
	}
}
