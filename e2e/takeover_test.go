package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/e2e/workload"
)

// A takeover replaces the daemon serving a mountpoint without a client
// noticing: the new mount slides under the old one, the old one is
// detached and serves what was open through it until it is closed. These
// tests drive it with client processes (package workload) that count
// every call that failed.

func init() {
	workload.RunIfAsked() // this test binary as a client of the workload
}

// takeover runs `mirrorfs SRC MNT --takeover` with e's pidfile and log.
func (e *env) takeover(extra ...string) result {
	e.t.Helper()
	return mirrorfs(e.t, e.dir, e.args(append([]string{"--takeover"}, extra...)...)...)
}

// takeoverOK takes over from the daemon that serves e and checks the new
// one is in place: exit 0, its ready line, a new pid in the pidfile and a
// new mount on top. It returns the new daemon's pid.
func (e *env) takeoverOK(extra ...string) int {
	e.t.Helper()
	old, oldID := e.pid(), topID(e)
	r := e.takeover(extra...)
	if r.code != 0 {
		e.t.Fatalf("takeover from %d: exit %d\nstdout: %s\nstderr: %s", old, r.code, r.stdout, r.stderr)
	}
	if want := fmt.Sprintf("from pid %d ", old); !strings.HasPrefix(r.stdout, "mirrorfs: took over ") || !strings.Contains(r.stdout, want) {
		e.t.Errorf("takeover from %d printed %q, want \"mirrorfs: took over ... %s...\"", old, r.stdout, want)
	}
	pid := e.pid()
	if pid <= 0 || pid == old || syscall.Kill(pid, 0) != nil {
		e.t.Fatalf("after a takeover from %d the pidfile names %d", old, pid)
	}
	e.pids = append(e.pids, pid)
	if id := topID(e); id == oldID || !mounted(e.mnt) {
		e.t.Fatalf("after a takeover from %d: mount id %d (was %d), mounted %v", old, id, oldID, mounted(e.mnt))
	}
	return pid
}

// topID is the id of the mount on top of e's mountpoint, or 0. It asks
// the kernel's path walk (statx, without asking the file system), not
// the mount table: a mount slid beneath another is listed after it.
func topID(e *env) int {
	var x unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, e.mnt, unix.AT_STATX_DONT_SYNC|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &x) != nil ||
		x.Mask&unix.STATX_MNT_ID == 0 {
		return 0
	}
	return int(x.Mnt_id)
}

// draining lists the draining daemons' files beside e's pidfile
// (NAME.draining.PID), by pid.
func draining(e *env) map[int]string {
	base := strings.TrimSuffix(filepath.Base(e.pidf), ".pid")
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(e.pidf), base+".draining.*"))
	m := map[int]string{}
	for _, f := range files {
		if pid, err := strconv.Atoi(f[strings.LastIndexByte(f, '.')+1:]); err == nil {
			m[pid] = f
		}
	}
	return m
}

// gone waits for each of pids to exit with 0, then for its draining file
// to go.
func (e *env) gone(pids []int) {
	e.t.Helper()
	for _, pid := range pids {
		if code := waitExit(e.t, pid); code != 0 {
			e.t.Errorf("draining daemon %d exited with %d, want 0", pid, code)
		}
	}
	eventually(e.t, "no draining file left", func() bool { return len(draining(e)) == 0 })
}

// checkLoad fails on any failed call of the workload and on a held file
// whose last writes are not on SOURCE.
func checkLoad(t *testing.T, e *env, r workload.Report) {
	t.Helper()
	t.Logf("workload: %s (expected: %v)", r.Summary(), workload.Expected)
	if n := r.FailedWith("ENOTCONN", "EIO", "ESTALE", "ENOENT"); n > 0 {
		t.Errorf("%d calls failed with ENOTCONN, EIO, ESTALE or ENOENT", n)
	}
	if n := r.Unexpected(); n > 0 {
		all := r.FailuresOutside(nil)
		t.Errorf("%d calls failed; the first: %v", n, all[:min(5, len(all))])
	}
	for _, role := range []string{"holder", "lockprobe", "cwd", "churn"} {
		if p, ok := r.Role(role); !ok || p.Calls == 0 {
			t.Errorf("the %s client made no call", role)
		}
	}
	h, _ := r.Role("holder")
	b, err := os.ReadFile(workload.HeldPath(e.src))
	written, mapped, herr := workload.HeldCounter(b)
	if err != nil || herr != nil || written != h.Counter || mapped != h.Counter {
		t.Errorf("held file on SOURCE: counter %d by write(2), %d by the map (%v %v), want %d both", written, mapped, err, herr, h.Counter)
	}
}

// TestTakeoverUnderLoad: 20 takeovers while 8 processes churn files, one
// holds a file open with a flock and a shared map, and one works in a
// folder under the mount. Not one call may fail; the held file's writes
// all reach SOURCE; the lock stays the holder's; the pidfile names the
// last daemon; every old daemon exits (0) once what it served is closed.
func TestTakeoverUnderLoad(t *testing.T) {
	for name, opts := range modes {
		t.Run(name, func(t *testing.T) { takeoverUnderLoad(t, opts, 20) })
	}
}

func takeoverUnderLoad(t *testing.T, opts []string, rounds int) {
	e := newEnv(t)
	e.start(opts...)
	pids := []int{e.pid()}
	load, err := workload.Start(workload.Config{Mnt: e.mnt, WorkDir: t.TempDir(), Pause: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(load.Kill)
	began := time.Now()
	for i := 0; i < rounds; i++ {
		pids = append(pids, e.takeoverOK(opts...))
	}
	took := time.Since(began)
	r, err := load.Stop(waitLimit)
	if err != nil {
		t.Error(err)
	}
	checkLoad(t, e, r)
	last := pids[len(pids)-1]
	if e.pid() != last {
		t.Errorf("the pidfile names %d, want the last daemon %d", e.pid(), last)
	}
	e.gone(pids[:len(pids)-1])
	log := e.log()
	for what, re := range map[string]string{"handed over": `msg="handed over" .*successor=\d+`, "took over": `msg="took over" from=\d+`, "drained": `msg=drained`} {
		if n := len(regexp.MustCompile(re).FindAllString(log, -1)); n != rounds {
			t.Errorf("the log says %q %d times, want %d", what, n, rounds)
		}
	}
	e.stopWithin(last, 10*time.Second) // exit 0, nothing mounted, no pidfile, a clean log
	t.Logf("takeover: %d takeovers in %v under the workload", rounds, took.Round(time.Millisecond))
}

// A policy file the new daemon refuses stops the takeover before the
// switch: it exits 1 with the reason on one line, and the old daemon
// serves on untouched (same pid in the pidfile, same mount, a file held
// open through it still works).
func TestTakeoverRefusedKeepsTheOldDaemon(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid, id := e.pid(), topID(e)
	f := holdOpen(t, e)
	bad := e.writePolicy("read_only = true\nfrobnicate = 1\n")
	r := e.takeover("--config", bad)
	// One line as a failed start says it, naming the file and the key.
	if r.code != 1 || !strings.HasPrefix(r.stderr, "mirrorfs: ") || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, bad) || !strings.Contains(r.stderr, "frobnicate") {
		t.Errorf("takeover with a broken policy: exit %d, stderr %q; want 1 and one line naming %s and the key", r.code, r.stderr, bad)
	}
	if e.pid() != pid || topID(e) != id || syscall.Kill(pid, 0) != nil {
		t.Errorf("after a refused takeover: pidfile %d (was %d), mount id %d (was %d)", e.pid(), pid, topID(e), id)
	}
	if _, err := f.WriteString("still served"); err != nil {
		t.Errorf("a file held open through the old mount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "new"), []byte("x"), 0o644); err != nil {
		t.Errorf("a new file through the old mount: %v", err)
	}
	eventually(t, "no daemon but the old one", func() bool { return len(daemonsFor(t, e.dir)) == 1 })
	if d := draining(e); len(d) != 0 {
		t.Errorf("draining files after a refused takeover: %v", d)
	}
	f.Close()
	e.stopWithin(pid, 10*time.Second)
}

// --takeover with nothing serving the mountpoint is a plain start.
func TestTakeoverWithNothingRunning(t *testing.T) {
	e := newEnv(t)
	r := e.takeover()
	if r.code != 0 || !strings.HasPrefix(r.stdout, "mirrorfs: mounted ") {
		t.Fatalf("takeover with nothing running: exit %d, %q %q; want a plain start", r.code, r.stdout, r.stderr)
	}
	pid := e.pid()
	e.pids = append(e.pids, pid)
	if !mounted(e.mnt) || syscall.Kill(pid, 0) != nil {
		t.Fatalf("not serving: mounted %v, pid %d", mounted(e.mnt), pid)
	}
	e.stopWithin(pid, 10*time.Second)
}

// SIGTERM to a draining daemon ends its drain at once: what it still
// served fails with ENOTCONN, it exits 0, and the new daemon's mount is
// untouched.
func TestTakeoverSIGTERMToDraining(t *testing.T) {
	for name, opts := range modes {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.start(opts...)
			old := e.pid()
			f := holdOpen(t, e)
			if _, err := f.WriteString("before"); err != nil {
				t.Fatal(err)
			}
			pid := e.takeoverOK(opts...)
			id := topID(e)
			eventually(t, "the old daemon's draining file", func() bool { return draining(e)[old] != "" })
			if _, err := f.WriteString(" during"); err != nil {
				t.Errorf("the held file while its daemon drains: %v", err)
			}
			syscall.Kill(old, syscall.SIGTERM)
			if code := waitExit(t, old); code != 0 {
				t.Errorf("the draining daemon exited with %d on SIGTERM, want 0", code)
			}
			// What goes to the daemon fails; with passthrough, reads and
			// writes go to the kernel's backing file, not to the daemon, and
			// may go on working.
			if err := f.Sync(); !errors.Is(err, syscall.ENOTCONN) {
				t.Errorf("fsync of the held file once its daemon ended: %v, want ENOTCONN", err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, syscall.ENOTCONN) {
				t.Errorf("flock of the held file once its daemon ended: %v, want ENOTCONN", err)
			}
			if _, err := f.WriteString(" after"); name == "nopassthrough" && !errors.Is(err, syscall.ENOTCONN) {
				t.Errorf("a write to the held file once its daemon ended: %v, want ENOTCONN", err)
			}
			f.Close()
			eventually(t, "its draining file gone", func() bool { return draining(e)[old] == "" })
			if e.pid() != pid || topID(e) != id {
				t.Errorf("the new daemon's mount was touched: pidfile %d (want %d), mount id %d (want %d)", e.pid(), pid, topID(e), id)
			}
			if b, err := os.ReadFile(filepath.Join(e.mnt, "held")); err != nil || !strings.HasPrefix(string(b), "before during") {
				t.Errorf("the held file through the new mount: %q, %v; want \"before during\"...", b, err)
			}
			if !strings.Contains(e.log(), fmt.Sprintf("draining=%d", old)) {
				t.Errorf("the log has no line of the draining daemon %d", old)
			}
			e.stopWithin(pid, 10*time.Second)
		})
	}
}

// A daemon that offers no takeover (no control socket: a version before
// it) is not interrupted by surprise: --takeover refuses and names the way
// out; --allow-interruption stops it (found by the lock's holder), then
// starts.
func TestTakeoverWithoutControlSocket(t *testing.T) {
	e := newEnv(t)
	e.start()
	old, id := e.pid(), topID(e)
	sock := strings.TrimSuffix(e.pidf, ".pid") + ".sock"
	if err := os.Remove(sock); err != nil {
		t.Fatalf("the daemon's control socket: %v", err)
	}
	r := e.takeover()
	if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "no control socket answers") ||
		!strings.Contains(r.stderr, "--allow-interruption") {
		t.Errorf("takeover of a daemon without a control socket: exit %d, stderr %q", r.code, r.stderr)
	}
	if e.pid() != old || topID(e) != id {
		t.Fatalf("a refused takeover touched the old daemon: pidfile %d (was %d), mount id %d (was %d)", e.pid(), old, topID(e), id)
	}
	r = e.takeover("--allow-interruption")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "mirrorfs: mounted ") {
		t.Fatalf("takeover --allow-interruption: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if code := waitExit(t, old); code != 0 {
		t.Errorf("the old daemon exited %d, want 0 (a clean stop)", code)
	}
	pid := e.pid()
	e.pids = append(e.pids, pid)
	if pid == old || syscall.Kill(pid, 0) != nil || !mounted(e.mnt) {
		t.Errorf("after an interrupting takeover: pidfile %d (old %d), mounted %v", pid, old, mounted(e.mnt))
	}
	if !strings.Contains(e.log(), "stopping the old daemon") {
		t.Error("the log does not say the old daemon was stopped")
	}
}
