package fs

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Unmount unmounts the mirror, not lazily, retrying briefly while it is
// busy as go-fuse does; it returns nil once the FUSE session has ended. A
// mount made through the mount API is unmounted through its attachment,
// never by its path: go-fuse cannot unmount a "/dev/fd/N" mount, and a path
// resolved again may lead to another mount.
func (m *Mirror) Unmount() error {
	if m.at == nil {
		return m.Server.Unmount()
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
	m.Server.Wait()
	return nil
}

// Detach unmounts the mirror lazily: it leaves the namespace at once and
// goes away when the last file open through it is closed. go-fuse has no
// lazy unmount; fusermount3 has one for the mounts it made.
func (m *Mirror) Detach() error {
	if m.at == nil {
		out, err := exec.Command(fusermount(), "-uz", m.mountpoint).CombinedOutput()
		if err != nil {
			return fmt.Errorf("fusermount3 -uz %s: %v: %s", m.mountpoint, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := m.at.unmount(unix.MNT_DETACH); err != nil {
		return fmt.Errorf("lazy unmount %s: %w", m.mountpoint, err)
	}
	return nil
}

// MountID is the mount's id in /proc/self/mountinfo, or 0 when fusermount3
// mounted it.
func (m *Mirror) MountID() int { return m.tableID }

// fusermount returns the fusermount3 (or older fusermount) on PATH.
func fusermount() string {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return "fusermount3"
}

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
