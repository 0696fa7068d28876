package fs

import (
	"errors"
	"fmt"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mirrorfs/mounts"
)

// detachGrace is how long a stop waits for the session to end after a lazy
// detach or an abort: requests in flight finish, files still open see
// ENOTCONN after.
const detachGrace = time.Second

// Stop ends the mount, whatever holds it: it unmounts, retrying while the
// mount is busy until timeout, then detaches lazily so that the mountpoint
// is free; a session that outlives the unmount (a copy of the mount in
// another mount namespace) is aborted through fusectl. It returns within
// timeout plus a few short graces, with the session ended or given up on.
// It never sends a request to the mount.
func (m *Mirror) Stop(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		err, done := m.unmountBy(deadline)
		switch {
		case !done:
			m.log.Warn("the FUSE session outlives the unmount (is the mount also in another mount namespace?); aborting it")
			m.Abort()
			return
		case err == nil:
			m.log.Info("unmounted", "mountpoint", m.mountpoint)
			return
		case errors.Is(err, ErrNotMounted):
			m.log.Info("already unmounted", "mountpoint", m.mountpoint)
			m.waitDone(detachGrace)
			return
		case !mounts.IsBusy(err) || time.Now().After(deadline):
			m.log.Warn("unmount failed; detaching lazily", "err", err)
			m.detachThenWait()
			return
		}
		time.Sleep(100 * time.Millisecond) // unmount itself already waited ~150 ms
	}
}

// detachThenWait detaches lazily and waits a grace for the session to end.
func (m *Mirror) detachThenWait() {
	if err := m.Detach(); err != nil {
		m.log.Error("detach", "err", err)
		m.Abort()
		return
	}
	m.log.Info("detached lazily", "mountpoint", m.mountpoint)
	m.waitDone(detachGrace)
}

// Abort ends the session through fusectl and waits a grace for it to end:
// whatever is still open through the mount fails with ENOTCONN after.
func (m *Mirror) Abort() {
	if err := mounts.Abort(m.entry); err != nil {
		m.log.Error("abort", "err", err)
	}
	m.waitDone(detachGrace)
}

// waitDone waits, bounded, for the FUSE session to end: after a lazy
// unmount it lasts as long as files are open through it.
func (m *Mirror) waitDone(limit time.Duration) {
	select {
	case <-m.done:
	case <-time.After(limit):
		m.log.Warn("files still open through the detached mount; going on", "waited", limit.String())
	}
}

// unmountBy runs unmount, which waits without bound for the session to end
// after a successful umount; done is false if it did not return by
// deadline (plus a grace).
func (m *Mirror) unmountBy(deadline time.Time) (err error, done bool) {
	result := make(chan error, 1)
	go func() { result <- m.unmount() }()
	select {
	case err := <-result:
		return err, true
	case <-time.After(time.Until(deadline) + detachGrace):
		return nil, false
	}
}

// unmount unmounts the mirror, not lazily, retrying briefly while it is
// busy as go-fuse does; it returns nil once the FUSE session has ended. A
// mount made through the mount API is unmounted through its attachment,
// never by its path: go-fuse cannot unmount a "/dev/fd/N" mount, and a path
// resolved again may lead to another mount.
func (m *Mirror) unmount() error {
	if m.at == nil {
		return mounts.HelperError(m.srv.Unmount())
	}
	var err error
	delay := time.Duration(0)
	for range 5 {
		if err = m.at.unmount(0); !errors.Is(err, unix.EBUSY) {
			break
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	<-m.done
	return nil
}

// Detach unmounts the mirror lazily: it leaves the namespace at once and
// goes away when the last file open through it is closed. go-fuse has no
// lazy unmount; fusermount3 has one for the mounts it made.
func (m *Mirror) Detach() error {
	if m.at == nil {
		return mounts.DetachPath(m.mountpoint)
	}
	if err := m.at.unmount(unix.MNT_DETACH); err != nil {
		return fmt.Errorf("lazy unmount %s: %w", m.mountpoint, err)
	}
	return nil
}

// InTable says whether the mirror's mount is still in the mount table:
// after the session ended, an unmount took it out, an aborted connection
// left it there, dead.
func (m *Mirror) InTable() bool {
	table, err := mounts.Read()
	return err == nil && mounts.Has(table, m.entry)
}

// Waiting is the number of requests the kernel holds for the mirror, read
// from fusectl (no request to the mount).
func (m *Mirror) Waiting() (int, error) { return mounts.Waiting(m.entry) }

// endedWithin waits up to limit for srv's serve loops to end.
func endedWithin(srv *fuse.Server, limit time.Duration) bool {
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}
