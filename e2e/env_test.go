package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
			e.killWithin(pid, waitLimit)
		}
	}
	for i := 0; i < 10 && mounted(e.mnt); i++ {
		unix.Unmount(e.mnt, unix.MNT_DETACH)
	}
}

// killWithin reaps a SIGKILLed pid within limit. A process that does not
// die is stuck in the kernel (a thread in D state waiting on a FUSE
// request): its state and stacks are logged, its mount's connection is
// aborted (which ends every request waiting on it), and it gets a second
// bounded wait; the test fails either way. It says whether pid died in time.
func (e *env) killWithin(pid int, limit time.Duration) bool {
	e.t.Helper()
	if _, ok := reapWithin(pid, limit); ok {
		return true
	}
	e.t.Errorf("daemon %d did not die within %v of SIGKILL\n%s", pid, limit, procDump(pid))
	if m, ok := mountAt(e.mnt); ok && m.FSType == fs.FSType {
		mounts.Abort(m)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if _, ok := reapWithin(pid, limit); !ok {
		e.t.Errorf("daemon %d is unkillable, even with its connection aborted\n%s", pid, procDump(pid))
	}
	return false
}

// reapWithin reaps pid, polling, for at most limit. It returns true once
// pid is gone, with its wait status (nil for a process not ours to reap),
// and false on timeout.
func reapWithin(pid int, limit time.Duration) (*unix.WaitStatus, bool) {
	deadline := time.Now().Add(limit)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case got == pid:
			return &ws, true
		case errors.Is(err, unix.ECHILD) && syscall.Kill(pid, 0) != nil:
			return nil, true // not ours to reap, and gone
		case time.Now().After(deadline):
			return nil, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procDump is a process's state and the kernel stack of each of its
// threads, for a process that would not end.
func procDump(pid int) string {
	var b strings.Builder
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	fmt.Fprintf(&b, "stat: %s", stat)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
		tstat, _ := os.ReadFile(dir + "/stat")
		stack, _ := os.ReadFile(dir + "/stack")
		fmt.Fprintf(&b, "task %s: state %s\n%s", task.Name(), procState(string(tstat)), stack)
	}
	return b.String()
}

// stoppedAll says whether every thread of pid is stopped (SIGSTOP takes
// effect thread by thread, some time after kill returns).
func stoppedAll(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if procState(string(stat)) != "T" {
			return false
		}
	}
	return true
}

// procState is the state letter of a /proc/PID/stat line (R, S, D, Z...).
func procState(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return "?"
	}
	return stat[i+2 : i+3]
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
	cmd.WaitDelay = 10 * time.Second // bounded, even if a child kept its output open
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
// exit code, or 128+signal (-1 for one not ours to reap). A daemon that has
// not exited within the wait limit is dumped (state, stacks), SIGKILLed and
// reaped (bounded), and the test fails.
func waitExit(t *testing.T, pid int) int {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("waitExit(%d): not a process", pid)
	}
	ws, ok := reapWithin(pid, waitLimit)
	if !ok {
		dump := procDump(pid)
		syscall.Kill(pid, syscall.SIGKILL)
		_, gone := reapWithin(pid, waitLimit)
		t.Fatalf("daemon %d did not exit within %v (killed it: gone=%v)\n%s", pid, waitLimit, gone, dump)
	}
	switch {
	case ws == nil:
		return -1
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
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
