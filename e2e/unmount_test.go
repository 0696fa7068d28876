package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// holdOpen opens a file through the mirror and keeps it open until cleanup.
func holdOpen(t *testing.T, e *env) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(e.mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// ioInFlight runs writers through the mirror until stop is closed. Their
// errors are expected once the mount goes away; only a hang would matter.
func ioInFlight(t *testing.T, e *env, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := filepath.Join(e.mnt, fmt.Sprintf("io%d", i))
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if f, err := os.Create(name); err == nil {
					f.Write(buf)
					f.Close()
				}
			}
		}()
	}
	return &wg
}

func TestExternalUnmount(t *testing.T) {
	cases := []struct {
		name    string
		cmd     []string
		held    bool
		wantLog string
	}{
		{"fusermount3 -u", []string{"fusermount3", "-u"}, false, "unmounted externally"},
		{"fusermount3 -uz with a held file and I/O", []string{"fusermount3", "-uz"}, true, "unmounted externally"},
		{"umount -l with a held file", []string{"umount", "-l"}, true, "unmounted externally"},
		{"umount", []string{"umount"}, false, "unmounted externally"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.start("--unmount-timeout", "1s")
			pid := e.pid()
			stop := make(chan struct{})
			var wg *sync.WaitGroup
			if tc.held {
				f := holdOpen(t, e)
				f.WriteString("x")
				wg = ioInFlight(t, e, stop)
			}
			out, err := exec.Command(tc.cmd[0], append(tc.cmd[1:], e.mnt)...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v: %s", tc.cmd, err, out)
			}
			e.stopped(pid)
			close(stop)
			if wg != nil {
				wg.Wait()
			}
			if !strings.Contains(e.log(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, e.log())
			}
		})
	}
}

func TestConnectionAbort(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	abort := abortFile(t, e.mnt)
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		t.Fatal(err)
	}
	e.lost(pid) // the mount died under the daemon: a non-zero exit (lifecycle2_test.go)
	if !strings.Contains(e.log(), "connection aborted") {
		t.Errorf("log lacks the abort:\n%s", e.log())
	}
}

// abortFile is the fusectl abort switch of the FUSE connection at mnt.
func abortFile(t *testing.T, mnt string) string {
	t.Helper()
	const ctl = "/sys/fs/fuse/connections"
	if m, ok := mountAt(ctl); !ok || m.FSType != "fusectl" {
		if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
			t.Skipf("fusectl is not available: %v", err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s/%d/abort", ctl, unix.Minor(st.Dev))
}

func TestBusyUnmountOnSIGTERM(t *testing.T) {
	e := newEnv(t)
	e.start("--unmount-timeout", "500ms")
	pid := e.pid()
	f := holdOpen(t, e)
	if _, err := f.WriteString("before the signal"); err != nil {
		t.Fatal(err)
	}
	e.stopWithin(pid, 5*time.Second) // --unmount-timeout 500ms, then a lazy detach
	if !strings.Contains(e.log(), "detached") {
		t.Errorf("the lazy detach is not logged:\n%s", e.log())
	}
	if b, _ := os.ReadFile(filepath.Join(e.src, "held")); string(b) != "before the signal" {
		t.Errorf("a write acknowledged before SIGTERM is %q on the source", b)
	}
}

func TestAutoRemount(t *testing.T) {
	e := newEnv(t)
	e.start("-o", "auto_remount")
	pid := e.pid()
	os.WriteFile(filepath.Join(e.src, "f"), []byte("still here"), 0o644)
	if err := os.WriteFile(abortFile(t, e.mnt), []byte("1"), 0o200); err != nil {
		t.Fatal(err)
	}
	// The kernel may give the new mount the old one's id and device number:
	// the daemon's word is what tells them apart.
	eventually(t, "a fresh mount", func() bool { return strings.Contains(e.log(), "msg=remounted") })
	if !mounted(e.mnt) {
		t.Fatal("remounted, says the log, but nothing is mounted")
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, "f")); err != nil || string(b) != "still here" {
		t.Errorf("after the remount: %q, %v", b, err)
	}
	if e.pid() != pid || syscall.Kill(pid, 0) != nil {
		t.Errorf("the daemon changed: pid %d, was %d", e.pid(), pid)
	}
	if strings.Count(mountTable(t), " "+e.mnt+" ") != 1 {
		t.Errorf("the dead mount was not detached:\n%s", mountTable(t))
	}

	// An unmount by the operator still means stop.
	if out, err := exec.Command("fusermount3", "-u", e.mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	e.stopped(pid)
}
