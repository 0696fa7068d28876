package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/mounts"
)

const waitLimit = 20 * time.Second

// requireFUSE skips a test that cannot mount, and fails it under CI, where
// a missing FUSE means a broken setup rather than an unusual machine.
func requireFUSE(t *testing.T) {
	t.Helper()
	var missing string
	switch {
	case os.Geteuid() != 0:
		missing = "root"
	case !exists("/dev/fuse"):
		missing = "/dev/fuse"
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && missing == "" {
		missing = "fusermount3 (apt-get install fuse3)"
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("end-to-end tests need %s, and CI must provide it", missing)
	}
	t.Skipf("end-to-end tests need %s", missing)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// env is one test's folders: a source, a mountpoint, a pidfile and a log.
type env struct {
	t                         *testing.T
	dir, src, mnt, pidf, logf string
	pids                      []int // daemons seen, killed in cleanup
}

func newEnv(t *testing.T) *env {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	e := &env{t: t, dir: dir, src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"),
		pidf: filepath.Join(dir, "run", "mirrorfs.pid"), logf: filepath.Join(dir, "mirrorfs.log")}
	for _, d := range []string{e.src, e.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after TempDir, so it runs first: nothing stays mounted.
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) cleanup() {
	if e.t.Failed() {
		if b, err := os.ReadFile(e.logf); err == nil {
			e.t.Logf("daemon log:\n%s", b)
		}
	}
	if pid := e.pid(); pid > 0 {
		e.pids = append(e.pids, pid)
	}
	for _, p := range daemonsFor(e.t, e.dir) {
		pid, _ := strconv.Atoi(p)
		e.pids = append(e.pids, pid)
	}
	for _, pid := range e.pids {
		if pid > 0 && syscall.Kill(pid, syscall.SIGKILL) == nil { // never 0 or -1: a group
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, 0, nil)
		}
	}
	for i := 0; i < 10 && mounted(e.mnt); i++ {
		unix.Unmount(e.mnt, unix.MNT_DETACH)
	}
}

// args is SOURCE MOUNTPOINT with this env's pidfile and log, then extra.
func (e *env) args(extra ...string) []string {
	return append([]string{e.src, e.mnt, "--pidfile", e.pidf, "--log", e.logf}, extra...)
}

// start runs mirrorfs in the background and expects it ready.
func (e *env) start(extra ...string) result {
	e.t.Helper()
	r := mirrorfs(e.t, e.dir, e.args(extra...)...)
	if r.code != 0 {
		e.t.Fatalf("mirrorfs %v: exit %d\nstdout: %s\nstderr: %s", extra, r.code, r.stdout, r.stderr)
	}
	if !mounted(e.mnt) {
		e.t.Fatalf("mirrorfs exited 0 but %s is not mounted", e.mnt)
	}
	pid := e.pid()
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		e.t.Fatalf("pidfile %s names no live process (%d)", e.pidf, pid)
	}
	e.pids = append(e.pids, pid)
	return r
}

// pid is what the pidfile says, or 0.
func (e *env) pid() int {
	b, err := os.ReadFile(e.pidf)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// log is the daemon's log so far.
func (e *env) log() string {
	b, _ := os.ReadFile(e.logf)
	return string(b)
}

// checkCleanLog fails on any sign of a crash or a race in the log.
func (e *env) checkCleanLog() {
	e.t.Helper()
	log := e.log()
	for _, bad := range []string{"panic", "fatal error", "DATA RACE", "negative WaitGroup"} {
		if strings.Contains(log, bad) {
			e.t.Errorf("the daemon's log mentions %q:\n%s", bad, log)
		}
	}
}

// stopped checks the daemon ended well: exit 0, unmounted, no pidfile.
func (e *env) stopped(pid int) {
	e.t.Helper()
	if code := waitExit(e.t, pid); code != 0 {
		e.t.Errorf("daemon %d exited with %d, want 0", pid, code)
	}
	if mounted(e.mnt) {
		e.t.Errorf("%s is still mounted after the daemon exited", e.mnt)
	}
	if exists(e.pidf) {
		e.t.Errorf("pidfile %s left behind", e.pidf)
	}
	e.checkCleanLog()
}

// stopWithin sends SIGTERM and checks the daemon ended well within limit.
func (e *env) stopWithin(pid int, limit time.Duration) {
	e.t.Helper()
	began := time.Now()
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
	if took := time.Since(began); took > limit {
		e.t.Errorf("stop took %v, more than %v", took, limit)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// mirrorfs runs the binary in dir and returns how it ended.
func mirrorfs(t *testing.T, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running mirrorfs: %v", err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// mountAt returns the mount visible at path in the mount table.
func mountAt(path string) (mounts.Mount, bool) {
	table, err := mounts.Read()
	if err != nil {
		return mounts.Mount{}, false
	}
	return mounts.TopAt(table, path)
}

func mounted(path string) bool {
	m, ok := mountAt(path)
	return ok && m.FSType == fs.FSType
}

// eventually polls cond until it holds or the wait limit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitMounted(t *testing.T, mnt string) {
	t.Helper()
	eventually(t, mnt+" to be mounted", func() bool { return mounted(mnt) })
}

// waitExit reaps pid (a daemon adopted by this subreaper) and returns its
// exit code, or 128+signal.
func waitExit(t *testing.T, pid int) int {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("waitExit(%d): not a process", pid)
	}
	code := -1
	eventually(t, "daemon "+strconv.Itoa(pid)+" to exit", func() bool {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return syscall.Kill(pid, 0) != nil // not ours to reap
		case err != nil || got != pid:
			return false
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		default:
			code = ws.ExitStatus()
		}
		return true
	})
	return code
}

// repeat runs step(0), step(1), ... on a goroutine of its own until the
// returned stop is called; stop returns once the step under way is done.
func repeat(step func(i int)) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
				step(i)
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
