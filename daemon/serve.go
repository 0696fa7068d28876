package daemon

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"mirrorfs/fs"
)

// serve runs until a stop signal or an unmount. One goroutine, this one,
// owns all signals. With -o auto_remount, a session that ends abnormally
// (the connection aborted while the mount stays in the mount table) is
// followed by a fresh mount; an unmount always means stop.
func (d *daemon) serve() {
	d.mu.Lock()
	hup := d.hupPending
	d.mu.Unlock()
	if hup {
		d.reload() // a SIGHUP that came during the start: logrotate may wait on it
	}
	for {
		aborted := d.serveSession()
		if !aborted || !d.cfg.AutoRemount || !d.remount() {
			return
		}
	}
}

// serveSession serves one FUSE session; it reports whether the session
// ended by an aborted connection rather than a stop or an unmount, and has
// closed the daemon otherwise.
func (d *daemon) serveSession() (aborted bool) {
	served := make(chan struct{})
	go func(m *fs.Mirror) {
		m.Wait()
		close(served)
	}(d.mirror)
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	gone := d.watchMount(stopWatch, d.mounted)
	for {
		select {
		case sig := <-d.stops: // first, however many SIGHUPs wait
			d.stop(sig, served)
			return false
		default:
		}
		select {
		case <-d.hups:
			d.reload()
		case sig := <-d.stops:
			d.stop(sig, served)
			return false
		case <-served:
			if d.connectionAborted() && d.cfg.AutoRemount {
				return true
			}
			d.close("session ended", nil)
			return false
		case <-gone:
			d.log.Info("unmounted externally", "mountpoint", d.cfg.Mountpoint)
			d.waitServed(served, d.cfg.UnmountTimeout)
			d.close("unmounted externally", nil)
			return false
		}
	}
}

// stop ends the daemon on a stop signal.
func (d *daemon) stop(sig os.Signal, served <-chan struct{}) {
	d.log.Info("signal", "signal", sig.String())
	sd.SdNotify(false, sd.SdNotifyStopping)
	d.unmountWithin(d.cfg.UnmountTimeout, served)
	d.close("stopped", nil)
}

// connectionAborted handles the end of the FUSE session. The rule that
// tells an abort from an unmount: an unmount takes our mount out of the
// mount table; an aborted connection leaves it there, dead. That dead mount
// is detached here.
func (d *daemon) connectionAborted() bool {
	mounts, err := readMounts()
	if err != nil || !hasMount(mounts, d.mounted) {
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
// backoff; it gives up after remountAttempts or on a stop signal, and then
// closes the daemon.
func (d *daemon) remount() bool {
	backoff := remountBackoff
	for attempt := 1; attempt <= remountAttempts; attempt++ {
		d.log.Warn("remounting", "attempt", attempt, "of", remountAttempts)
		err := d.clearMountpoint()
		if err == nil {
			err = d.mount()
		}
		if err == nil {
			d.log.Info("remounted", "mountpoint", d.cfg.Mountpoint, "passthrough", d.mirror.Passthrough())
			d.writeState()
			return true
		}
		d.log.Error("remount failed", "attempt", attempt, "err", err)
		if !d.sleepUnlessStopped(backoff) {
			break
		}
		backoff *= 2
	}
	d.close("gave up remounting", nil)
	return false
}

// sleepUnlessStopped waits for d, or less if a stop signal comes.
func (d *daemon) sleepUnlessStopped(wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case sig := <-d.stops: // a SIGHUP stays pending for the next session
		d.log.Info("signal", "signal", sig.String())
		return false
	}
}

// unmountWithin unmounts, retrying while the mount is busy until timeout,
// then detaches lazily so that the mountpoint is free whatever happens. It
// returns within timeout plus a short grace, even when the session
// outlives the unmount (a copy of the mount in another mount namespace).
func (d *daemon) unmountWithin(timeout time.Duration, served <-chan struct{}) {
	deadline := time.Now().Add(timeout)
	for {
		err, done := d.unmountBy(deadline)
		if !done {
			d.log.Warn("the FUSE session outlives the unmount (is the mount also in another mount namespace?); aborting it")
			d.abortConnection()
			return
		}
		if err == nil {
			d.log.Info("unmounted", "mountpoint", d.cfg.Mountpoint)
			return
		}
		if errors.Is(err, fs.ErrNotMounted) {
			d.log.Info("already unmounted", "mountpoint", d.cfg.Mountpoint)
			d.waitServed(served, detachGrace)
			return
		}
		if !isBusy(err) || time.Now().After(deadline) {
			d.log.Warn("unmount failed; detaching lazily", "err", err)
			break
		}
		time.Sleep(100 * time.Millisecond) // Unmount itself already waited ~150 ms
	}
	if err := d.mirror.Detach(); err != nil {
		d.log.Error("detach", "err", err)
		return
	}
	d.log.Info("detached lazily", "mountpoint", d.cfg.Mountpoint)
	// Let requests in flight finish; files still open see ENOTCONN after.
	d.waitServed(served, detachGrace)
}

// detachGrace is how long a stop waits after a lazy detach.
const detachGrace = time.Second

// unmountBy runs the mirror's Unmount, which waits without bound for the
// session to end after a successful umount; done is false if it did not
// return by deadline (plus a grace).
func (d *daemon) unmountBy(deadline time.Time) (err error, done bool) {
	result := make(chan error, 1)
	go func() { result <- d.mirror.Unmount() }()
	select {
	case err := <-result:
		return err, true
	case <-time.After(time.Until(deadline) + detachGrace):
		return nil, false
	}
}

// abortConnection ends our FUSE connection through fusectl, so that a
// session kept alive elsewhere cannot keep the daemon.
func (d *daemon) abortConnection() {
	_, minor, ok := strings.Cut(d.mounted.Dev, ":")
	if !ok {
		return
	}
	const ctl = "/sys/fs/fuse/connections"
	if _, err := os.Stat(ctl + "/" + minor); err != nil {
		unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	if err := os.WriteFile(ctl+"/"+minor+"/abort", []byte("1"), 0); err != nil {
		d.log.Error("abort the FUSE connection", "err", err)
	}
}

// unmount is the quick unmount of a start that went wrong. The mirror
// unmounts what it mounted, not whatever the mountpoint's path leads to.
func (d *daemon) unmount() {
	if err := d.mirror.Unmount(); err != nil {
		if err := d.mirror.Detach(); err != nil {
			d.log.Error("detach", "err", err)
		}
	}
}

// waitServed waits, bounded, for the FUSE session to end: after a lazy
// unmount it lasts as long as files are open through it.
func (d *daemon) waitServed(served <-chan struct{}, timeout time.Duration) {
	select {
	case <-served:
	case <-time.After(timeout):
		d.log.Warn("files still open through the detached mount; exiting anyway", "waited", timeout.String())
	}
}

// watchMount closes the returned channel when our mount leaves the mount
// table. The kernel flags /proc/self/mountinfo (POLLPRI) on every change;
// the loop also wakes each second to run the health check.
func (d *daemon) watchMount(stop <-chan struct{}, m Mount) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		f, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			d.log.Error("mount watch", "err", err)
			<-stop
			return
		}
		defer f.Close()
		h := &health{mnt: m.Mountpoint, log: d.log, last: time.Now()}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if mounts, err := readMountsFrom(f); err == nil && !hasMount(mounts, m) {
				return
			}
			h.check(time.Now())
			fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
			unix.Poll(fds, 1000)
		}
	}()
	return gone
}

// readMountsFrom rereads an open mountinfo file from the start.
func readMountsFrom(f *os.File) ([]Mount, error) {
	if _, err := f.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return ParseMountinfo(f)
}
