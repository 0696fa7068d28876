package daemon

import (
	"errors"
	"fmt"
	"time"

	"mirrorfs/fs"
	"mirrorfs/mounts"
)

// ErrMountLost means the mount died under the daemon: its connection was
// aborted (without -o auto_remount), or auto_remount gave up. It exits
// with ExitMountLost, so that a supervisor restarts it.
var ErrMountLost = errors.New("the mount died under the daemon")

// serve runs until a stop signal or the end of the mount, on the main
// goroutine, which alone reads the signals. With -o auto_remount, a session
// that ends by an aborted connection (the mount stays in the mount table,
// dead) is followed by a fresh mount; an unmount always means stop. It
// returns nil for a clean stop (a signal, an unmount from outside).
func (d *daemon) serve() error {
	for {
		d.reloadPending()
		aborted, err := d.serveSession()
		if !aborted {
			return err
		}
		if !d.cfg.AutoRemount {
			return fmt.Errorf("%w: the FUSE connection was aborted", ErrMountLost)
		}
		if stopped, err := d.remount(); stopped || err != nil {
			return err
		}
	}
}

// serveSession serves one FUSE session: it returns when a stop signal
// came (the mount is unmounted then), when the mount was unmounted from
// outside, or when the connection was aborted (aborted: the dead mount is
// detached then).
func (d *daemon) serveSession() (aborted bool, err error) {
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	gone := mounts.Gone(d.mirror.Entry(), stopWatch)
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	d.health = health{}
	for {
		select {
		case sig := <-d.stops: // first, however many SIGHUPs wait
			d.stop(sig.String())
			return false, nil
		default:
		}
		// While a takeover is under way, the new daemon may detach our
		// mount (and an idle one ends at once): it tells what happened.
		done, unmounted := d.mirror.Done(), gone
		if d.taker != 0 {
			done, unmounted = nil, nil
		}
		select {
		case <-d.hups:
			d.reload()
		case sig := <-d.stops:
			d.stop(sig.String())
			return false, nil
		case <-done:
			return d.sessionEnded(), nil
		case <-unmounted:
			d.log.Info("unmounted externally", "mountpoint", d.cfg.Mountpoint)
			d.waitDone(d.cfg.UnmountTimeout)
			return false, nil
		case <-tick.C:
			d.health.check(d.mirror, d.log)
			if d.expireTaker() {
				return false, nil
			}
		case c := <-d.calls:
			if d.control(c) {
				return false, nil
			}
		}
	}
}

// stop ends the mount on a stop signal.
func (d *daemon) stop(sig string) {
	d.log.Info("signal", "signal", sig)
	d.mirror.Stop(d.cfg.UnmountTimeout)
	d.clearBelow()
}

// clearBelow detaches the dead mirrorfs mounts that our unmount revealed:
// a takeover that failed after it slid its mount beneath ours leaves one,
// which dies with its daemon (fs/beneath.go). The lock is still ours.
func (d *daemon) clearBelow() {
	for range 8 {
		table, err := mounts.Read()
		if err != nil {
			return
		}
		top, ok := mounts.TopAt(table, d.cfg.Mountpoint)
		if !ok || top.FSType != fs.FSType {
			return
		}
		if err := recoverStale(top, d.cfg.Pidfile, d.log); err != nil {
			d.log.Warn("a mirrorfs mount below ours stays", "err", err)
			return
		}
	}
}

// waitDone waits, bounded, for the session of a mount unmounted from
// outside to end: after a lazy unmount it lasts while files are open.
func (d *daemon) waitDone(limit time.Duration) {
	select {
	case <-d.mirror.Done():
	case <-time.After(limit):
		d.log.Warn("files still open through the detached mount; exiting anyway", "waited", limit.String())
	}
}

// sessionEnded tells an aborted connection from an unmount once the
// session ended: an unmount takes our mount out of the mount table; an
// aborted connection leaves it there, dead. That dead mount is detached.
func (d *daemon) sessionEnded() (aborted bool) {
	if !d.mirror.InTable() {
		d.log.Info("unmounted externally", "mountpoint", d.cfg.Mountpoint)
		return false
	}
	d.log.Warn("connection aborted; detaching the dead mount", "mountpoint", d.cfg.Mountpoint)
	if err := d.mirror.Detach(); err != nil {
		d.log.Error("detach", "err", err)
	}
	return true
}

// Remounting after an abort: attempts and the backoff between them.
const (
	remountAttempts = 5
	remountBackoff  = 200 * time.Millisecond
)

// remount mounts the mirror afresh after an aborted connection, with
// backoff. The mount runs on a goroutine while this one reads signals: a
// stop ends the remount (stopped), after the mount under way, if any, is
// unmounted. It fails with ErrMountLost after remountAttempts.
func (d *daemon) remount() (stopped bool, err error) {
	backoff := remountBackoff
	for attempt := 1; attempt <= remountAttempts; attempt++ {
		d.log.Warn("remounting", "attempt", fmt.Sprintf("%d/%d", attempt, remountAttempts))
		m, stopped, err := d.mountWhileListening()
		if stopped {
			return true, nil
		}
		if err == nil {
			d.mirror = m
			d.log.Info("remounted", "mountpoint", d.cfg.Mountpoint, "passthrough", d.mirror.Passthrough())
			d.writeState()
			return false, nil
		}
		d.log.Error("remount failed", "attempt", fmt.Sprintf("%d/%d", attempt, remountAttempts), "err", err)
		if !d.sleepUnlessStopped(backoff) {
			return true, nil
		}
		backoff *= 2
	}
	return false, fmt.Errorf("%w: gave up remounting after %d attempts", ErrMountLost, remountAttempts)
}

// mountWhileListening clears the mountpoint and mounts on a goroutine,
// while this one keeps the signals: SIGHUP is kept for later, a stop
// waits for the mount and unmounts it.
func (d *daemon) mountWhileListening() (*fs.Mirror, bool, error) {
	type result struct {
		m   *fs.Mirror
		err error
	}
	done := make(chan result, 1)
	cfg, pol := *d.cfg, d.policy
	go func() {
		err := clearMountpoint(&cfg, d.log)
		var m *fs.Mirror
		if err == nil {
			m, err = d.mount(&cfg, pol, d.log, nil)
		}
		done <- result{m, err}
	}()
	var stop bool
	for {
		select {
		case <-d.hups:
			d.hup = true
		case sig := <-d.stops:
			d.log.Info("signal", "signal", sig.String())
			stop = true
		case r := <-done:
			if stop && r.err == nil {
				r.m.Stop(d.cfg.UnmountTimeout)
			}
			return r.m, stop, r.err
		}
	}
}

// sleepUnlessStopped waits for wait, or less if a stop signal comes.
func (d *daemon) sleepUnlessStopped(wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return true
		case <-d.hups:
			d.hup = true
		case sig := <-d.stops:
			d.log.Info("signal", "signal", sig.String())
			return false
		}
	}
}

// reloadPending serves a SIGHUP that came while nothing was served (during
// the start, or a remount): logrotate may wait on it.
func (d *daemon) reloadPending() {
	if d.hup {
		d.hup = false
		d.reload()
	}
}
