package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/daemon"
)

// lost checks the daemon ended as one whose mount died under it does: the
// documented exit code, nothing mounted, no pidfile.
func (e *env) lost(pid int) {
	e.t.Helper()
	if code := waitExit(e.t, pid); code != daemon.ExitMountLost {
		e.t.Errorf("daemon %d exited with %d, want %d (the mount died under it)", pid, code, daemon.ExitMountLost)
	}
	if mounted(e.mnt) {
		e.t.Errorf("%s is still mounted after the daemon exited", e.mnt)
	}
	if exists(e.pidf) {
		e.t.Errorf("pidfile %s left behind", e.pidf)
	}
	e.checkCleanLog()
}

// abortAndWait aborts the mount's connection and waits for the daemon to
// say it remounted, for the nth time.
func (e *env) abortAndWait(n int) {
	e.t.Helper()
	if err := os.WriteFile(abortFile(e.t, e.mnt), []byte("1"), 0o200); err != nil {
		e.t.Fatal(err)
	}
	eventually(e.t, "remount", func() bool { return strings.Count(e.log(), "msg=remounted") == n })
	waitMounted(e.t, e.mnt)
}

var mountedProcs = regexp.MustCompile(`msg=mounted .* gomaxprocs=(\d+)`)

// Remounting does not change GOMAXPROCS: it is computed once.
func TestGOMAXPROCSStableAcrossRemounts(t *testing.T) {
	e := newEnv(t)
	e.start("-o", "auto_remount")
	pid := e.pid()
	e.abortAndWait(1)
	e.abortAndWait(2)
	var seen []string
	for _, m := range mountedProcs.FindAllStringSubmatch(e.log(), -1) {
		seen = append(seen, m[1])
	}
	if len(seen) != 3 {
		t.Fatalf("want 3 mounted lines with gomaxprocs, got %v:\n%s", seen, e.log())
	}
	if seen[0] != seen[1] || seen[1] != seen[2] {
		t.Errorf("GOMAXPROCS changed across remounts: %v", seen)
	}
	e.stopWithin(pid, 15*time.Second)
}

// A connection aborted without auto_remount is a mount that died: exit 4.
func TestExitCodeConnectionAborted(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	if err := os.WriteFile(abortFile(t, e.mnt), []byte("1"), 0o200); err != nil {
		t.Fatal(err)
	}
	e.lost(pid)
}

// auto_remount that gives up is a mount that died: exit 4. A tmpfs
// stacked on the mirror before the abort makes each remount fail.
func TestExitCodeRemountGaveUp(t *testing.T) {
	e := newEnv(t)
	e.start("-o", "auto_remount")
	pid := e.pid()
	abort := abortFile(t, e.mnt)
	if err := unix.Mount("tmpfs", e.mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before env's cleanup: the mirror below is then on top
		for i := 0; i < 3; i++ {
			if m, ok := mountAt(e.mnt); ok && m.FSType == "tmpfs" {
				unix.Unmount(e.mnt, unix.MNT_DETACH)
			}
		}
	})
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, pid); code != daemon.ExitMountLost {
		t.Errorf("exit %d, want %d", code, daemon.ExitMountLost)
	}
	if !strings.Contains(e.log(), "gave up remounting") {
		t.Errorf("the log does not say it gave up:\n%s", e.log())
	}
}

// foreground runs mirrorfs -f with no --log, stderr to a buffer, and
// returns the command and the buffer once the mount is up.
func foreground(t *testing.T, e *env, extra ...string) (*exec.Cmd, *syncWriter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	args := append([]string{"-f", e.src, e.mnt, "--pidfile", e.pidf}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = e.dir
	out := &syncWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pids = append(e.pids, cmd.Process.Pid)
	eventually(t, "the foreground daemon to be ready", func() bool {
		return strings.Contains(out.String(), "msg=ready") || cmd.ProcessState != nil
	})
	waitMounted(t, e.mnt)
	return cmd, out
}

// stopForeground sends SIGTERM and expects exit 0 within the wait limit.
func stopForeground(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("foreground daemon: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the foreground daemon did not stop")
	}
}

// Under -f without --log (how mirrorfs@.service runs it), every log line
// reaches stderr, those written while mounting included.
func TestForegroundLogsEveryLine(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		cmd, out := foreground(t, e, mode...)
		stopForeground(t, cmd)
		for _, want := range []string{"msg=starting", "msg=passthrough", "msg=mounted", "msg=ready", "msg=exit"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("stderr lacks %q:\n%s", want, out.String())
			}
		}
	})
}

// -o debug mounts and serves while well over a pipe's worth (1 MiB) of
// debug output is written, some of it while the mount is being made.
func TestDebugMountWithMuchOutput(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 200; i++ {
		os.WriteFile(filepath.Join(e.src, "file"+strings.Repeat("x", 100)+string(rune('a'+i%26))+time.Now().Format("150405.000000000")), nil, 0o644)
	}
	stop := repeat(func(int) { os.ReadDir(e.mnt) }) // requests from the first moment on
	cmd, out := foreground(t, e, "-o", "debug")
	eventually(t, "1 MiB of debug output", func() bool {
		os.ReadDir(e.mnt)
		return out.Len() > 1<<20
	})
	stop()
	stopForeground(t, cmd)
}

// syncWriter is a buffer written by a child's stdout and stderr and read
// by the test at once.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncWriter) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}
