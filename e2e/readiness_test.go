package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hungPath returns a path inside a mirror whose daemon is stopped (SIGSTOP):
// anything that looks it up blocks until the daemon continues.
func hungPath(t *testing.T) string {
	t.Helper()
	a := newEnv(t)
	a.start()
	pid := a.pid()
	syscall.Kill(pid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	eventually(t, "the daemon to stop", func() bool { return stoppedAll(pid) })
	return filepath.Join(a.mnt, "sub")
}

// loggedDaemon returns the pid the daemon writes in its first log line
// ("msg=starting ... pid=N"): the process list would also show the short-
// lived middle process of the detaching forks, which is not ours to reap.
func loggedDaemon(t *testing.T, e *env) int {
	t.Helper()
	var pid int
	eventually(t, "the daemon's first log line", func() bool {
		m := startingPid.FindStringSubmatch(e.log())
		if m == nil {
			return false
		}
		pid, _ = strconv.Atoi(m[1])
		return pid > 0
	})
	return pid
}

var startingPid = regexp.MustCompile(`msg=starting .*? pid=(\d+)`)

func TestReadyTimeoutStopsTheDaemon(t *testing.T) {
	hung := hungPath(t)
	e := newEnv(t)
	began := time.Now()
	r := mirrorfs(t, e.dir, e.src, hung, "--pidfile", e.pidf, "--log", e.logf, "--ready-timeout", "1s")
	if r.code != 1 || !strings.Contains(r.stderr, "mirrorfs: not ready within --ready-timeout; stopping the daemon\n") {
		t.Errorf("exit %d, stderr %q; want 1 and the timeout named", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "stopped by terminated before it was ready") {
		t.Errorf("stderr %q lacks the daemon's own word", r.stderr)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("a 1s ready timeout took %v", took)
	}
	eventually(t, "no daemon left", func() bool { return len(daemonsFor(t, e.dir)) == 0 })
	if exists(e.pidf) {
		t.Error("pidfile left behind")
	}
}

func TestInterruptedStartStopsTheDaemon(t *testing.T) {
	hung := hungPath(t)
	e := newEnv(t)
	cmd := exec.Command(bin, e.src, hung, "--pidfile", e.pidf, "--log", e.logf)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Until it logs, the daemon may not handle signals yet: a SIGTERM then
	// ends it by default, which is clean but not what this test is about.
	d := loggedDaemon(t, e)
	e.pids = append(e.pids, d)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("interrupted start: %v, want exit 130", cmd.ProcessState)
	}
	if !strings.Contains(stderr.String(), "mirrorfs: interrupted; stopping the daemon") {
		t.Errorf("stderr %q", stderr.String())
	}
	if code := waitExit(t, d); code != 1 {
		t.Errorf("the half-started daemon exited %d, want 1", code)
	}
}
