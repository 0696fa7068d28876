package daemon

import (
	"fmt"
	"os"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// serve runs until a stop signal, an unmount or an aborted connection. One
// goroutine, this one, owns all signals.
func (d *daemon) serve() {
	served := make(chan struct{})
	go func() {
		d.mirror.Wait()
		close(served)
	}()
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	gone := d.watchMount(stopWatch)
	for {
		select {
		case sig := <-d.signals:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.log.Info("signal", "signal", sig.String())
			sd.SdNotify(false, sd.SdNotifyStopping)
			d.unmountWithin(d.cfg.UnmountTimeout, served)
			d.close("stopped", nil)
			return
		case <-served:
			d.connectionEnded()
			return
		case <-gone:
			d.log.Info("unmounted externally", "mountpoint", d.cfg.Mountpoint)
			d.waitServed(served, d.cfg.UnmountTimeout)
			d.close("unmounted externally", nil)
			return
		}
	}
}

// connectionEnded handles the end of the FUSE session: the mount is gone
// (unmounted externally) or still there, dead (connection aborted).
func (d *daemon) connectionEnded() {
	mounts, err := readMounts()
	if err == nil && hasMount(mounts, d.mountID) {
		d.log.Warn("connection aborted; detaching the dead mount", "mountpoint", d.cfg.Mountpoint)
		if err := detach(d.cfg.Mountpoint); err != nil {
			d.log.Error("detach", "err", err)
		}
		d.close("connection aborted", nil)
		return
	}
	d.log.Info("unmounted externally", "mountpoint", d.cfg.Mountpoint)
	d.close("unmounted externally", nil)
}

// unmountWithin unmounts, retrying while the mount is busy until timeout,
// then detaches lazily so that the mountpoint is free whatever happens.
func (d *daemon) unmountWithin(timeout time.Duration, served <-chan struct{}) {
	deadline := time.Now().Add(timeout)
	for {
		err := d.mirror.Unmount()
		if err == nil {
			d.log.Info("unmounted", "mountpoint", d.cfg.Mountpoint)
			return
		}
		if !isBusy(err) || time.Now().After(deadline) {
			d.log.Warn("unmount failed; detaching lazily", "err", err)
			break
		}
		time.Sleep(100 * time.Millisecond) // Unmount itself already waited ~150 ms
	}
	if err := detach(d.cfg.Mountpoint); err != nil {
		d.log.Error("detach", "err", err)
		return
	}
	d.log.Info("detached; files still open through it see ENOTCONN from now", "mountpoint", d.cfg.Mountpoint)
}

// unmount is the quick unmount of a start that went wrong.
func (d *daemon) unmount() {
	if err := d.mirror.Unmount(); err != nil {
		if err := detach(d.cfg.Mountpoint); err != nil {
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
// table. The kernel flags /proc/self/mountinfo (POLLPRI) on every change.
func (d *daemon) watchMount(stop <-chan struct{}) <-chan struct{} {
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
		for {
			select {
			case <-stop:
				return
			default:
			}
			if mounts, err := readMountsFrom(f); err == nil && !hasMount(mounts, d.mountID) {
				return
			}
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
