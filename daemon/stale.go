package daemon

import (
	"fmt"
	"time"
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
	err := probeWithin(m.Mountpoint, probeTimeout)
	switch {
	case err == nil:
		return fmt.Errorf("mountpoint %s is already served by another mirrorfs (not the one with pidfile %s)", m.Mountpoint, d.cfg.Pidfile)
	case err == errNoAnswer:
		return fmt.Errorf("mountpoint %s is a mirrorfs mount that does not answer (its daemon stopped?)", m.Mountpoint)
	case !isDead(err):
		return fmt.Errorf("mountpoint %s: %w", m.Mountpoint, err)
	}
	if err := detach(m.Mountpoint); err != nil {
		return fmt.Errorf("recovering the dead mount at %s: %w", m.Mountpoint, err)
	}
	d.log.Warn("recovered a dead mount left by a previous daemon", "mountpoint", m.Mountpoint, "source", m.Source, "mount_id", m.ID)
	return nil
}
