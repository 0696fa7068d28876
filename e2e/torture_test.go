package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/daemon"
)

// tortureRounds is how many rounds each lifecycle fault gets: a few in
// make test, as many as asked in make torture (MIRRORFS_TORTURE_ROUNDS).
func tortureRounds() int {
	if n, err := strconv.Atoi(os.Getenv("MIRRORFS_TORTURE_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// syncedWrite writes data through the mirror and fsyncs it: once this
// returns, the data must survive any fault of the daemon.
func syncedWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// clients runs n processes writing and reading through the mirror until
// stopped; their errors are expected once the fault strikes.
func clients(t *testing.T, mnt string, n int) (stop func()) {
	t.Helper()
	var cmds []*exec.Cmd
	for i := 0; i < n; i++ {
		script := fmt.Sprintf(`while :; do dd if=/dev/zero of=%[1]s/c%[2]d bs=64k count=4 2>/dev/null; cat %[1]s/c%[2]d >/dev/null 2>&1; ls %[1]s >/dev/null 2>&1; done`, mnt, i)
		cmd := exec.Command("sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, c := range cmds {
			c.Process.Kill()
			if _, ok := reapWithin(c.Process.Pid, waitLimit); !ok {
				t.Errorf("a client did not die within %v of SIGKILL\n%s", waitLimit, procDump(c.Process.Pid))
			}
		}
	}
}

// afterRound checks what every round must leave: no mount, no daemon, no
// pidfile, a clean log, and the synced data intact on the source.
func afterRound(t *testing.T, e *env, want map[string][]byte) {
	t.Helper()
	if mounted(e.mnt) {
		t.Errorf("%s still mounted", e.mnt)
	}
	if p := daemonsFor(t, e.dir); len(p) > 0 {
		t.Errorf("daemons left: %v", p)
	}
	if exists(e.pidf) {
		t.Error("pidfile left")
	}
	e.checkCleanLog()
	for name, data := range want {
		if b, err := os.ReadFile(filepath.Join(e.src, name)); err != nil || !bytes.Equal(b, data) {
			t.Errorf("synced %s: %d bytes on the source (%v), want %d", name, len(b), err, len(data))
		}
	}
}

func TestTortureStop(t *testing.T) {
	for round := 0; round < tortureRounds(); round++ {
		for _, held := range []bool{false, true} {
			e := newEnv(t)
			e.start("--unmount-timeout", "300ms")
			pid := e.pid()
			stop := clients(t, e.mnt, 3)
			data := bytes.Repeat([]byte{byte(round)}, 100_000)
			syncedWrite(t, filepath.Join(e.mnt, "synced"), data)
			if held {
				holdOpen(t, e)
			}
			syscall.Kill(pid, syscall.SIGTERM)
			e.stopped(pid)
			stop()
			afterRound(t, e, map[string][]byte{"synced": data})
		}
	}
	t.Logf("torture: SIGTERM under I/O by 3 processes: %d rounds (half with a file held open), all clean", 2*tortureRounds())
}

func TestTortureExternal(t *testing.T) {
	faults := map[string]func(t *testing.T, e *env){
		"fusermount3 -uz": func(t *testing.T, e *env) { runOK(t, "fusermount3", "-uz", e.mnt) },
		"umount -l":       func(t *testing.T, e *env) { runOK(t, "umount", "-l", e.mnt) },
		"fusectl abort": func(t *testing.T, e *env) {
			if err := os.WriteFile(abortFile(t, e.mnt), []byte("1"), 0o200); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, fault := range faults {
		t.Run(name, func(t *testing.T) {
			for round := 0; round < tortureRounds(); round++ {
				e := newEnv(t)
				e.start("--unmount-timeout", "300ms")
				pid := e.pid()
				stop := clients(t, e.mnt, 3)
				data := []byte(fmt.Sprintf("round %d", round))
				syncedWrite(t, filepath.Join(e.mnt, "synced"), data)
				fault(t, e)
				if name == "fusectl abort" {
					e.lost(pid) // the mount died under the daemon: its own exit code
				} else {
					e.stopped(pid)
				}
				stop()
				afterRound(t, e, map[string][]byte{"synced": data})
			}
			t.Logf("torture: %s under I/O by 3 processes: %d rounds, all clean", name, tortureRounds())
		})
	}
}

func runOK(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

// kill9Moments are the moments TestTortureKill9 strikes at, in turn.
var kill9Moments = []struct {
	name   string
	before func(t *testing.T, e *env, pid int, rnd *rand.Rand)
}{
	{"just ready", func(t *testing.T, e *env, pid int, rnd *rand.Rand) {
		time.Sleep(time.Duration(rnd.Intn(20)) * time.Millisecond)
	}},
	{"under I/O", func(t *testing.T, e *env, pid int, rnd *rand.Rand) {
		time.Sleep(time.Duration(rnd.Intn(500)) * time.Millisecond)
	}},
	{"during a remount", func(t *testing.T, e *env, pid int, rnd *rand.Rand) {
		if err := os.WriteFile(abortFile(t, e.mnt), []byte("1"), 0o200); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rnd.Intn(30)) * time.Millisecond)
	}},
	{"during health activity", func(t *testing.T, e *env, pid int, rnd *rand.Rand) {
		// At the health tick (plus up to 300 ms), or as soon as a thread
		// of the daemon is seen in statfs, whichever comes first.
		until := time.Now().Add(healthEvery + time.Duration(rnd.Intn(300))*time.Millisecond)
		for time.Now().Before(until) {
			if inSyscall(pid, unix.SYS_STATFS) {
				inStatfs.Add(1)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}},
}

// inStatfs counts the kills that struck a daemon in statfs.
var inStatfs atomic.Int64

// inSyscall says whether a thread of pid is in system call nr.
func inSyscall(pid int, nr int) bool {
	for _, tid := range taskIDs(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == strconv.Itoa(nr) {
			return true
		}
	}
	return false
}

// TestTortureKill9 kills the daemon with SIGKILL at random moments (just
// ready, under I/O, during an auto_remount, during health activity), then
// starts it again: every start must recover the mount and serve the data
// synced before the kill, every killed daemon must be reaped within the
// wait limit (no thread left in D state, no unkillable zombie).
func TestTortureKill9(t *testing.T) {
	rounds := max(tortureRounds(), len(kill9Moments))
	seed := time.Now().UnixNano()
	rnd := rand.New(rand.NewSource(seed))
	e := newEnv(t)
	want := map[string][]byte{}
	recovered, recoveries := 0, 0
	var stuck []string // rounds whose daemon outlived SIGKILL
	began := time.Now()
	e.start("-o", "auto_remount")
	for round := 0; round < rounds; round++ {
		moment := kill9Moments[round%len(kill9Moments)]
		pid := e.pid()
		name := fmt.Sprintf("synced%d", round)
		want[name] = bytes.Repeat([]byte(name), 1000)
		syncedWrite(t, filepath.Join(e.mnt, name), want[name])
		stop := clients(t, e.mnt, 2)
		moment.before(t, e, pid, rnd)
		syscall.Kill(pid, syscall.SIGKILL)
		if !e.killWithin(pid, waitLimit) { // fails the test, aborts the connection
			stuck = append(stuck, fmt.Sprintf("%d (%s)", round, moment.name))
		}
		stop()
		logged := strings.Count(e.log(), "recovered a dead mount")
		if r := mirrorfs(t, e.dir, e.args("-o", "auto_remount")...); r.code != 0 || !mounted(e.mnt) {
			t.Fatalf("round %d (%s, seed %d): the start after kill -9: exit %d, mounted %v: %s", round, moment.name, seed, r.code, mounted(e.mnt), r.stderr)
		}
		e.pids = append(e.pids, e.pid())
		recoveries += strings.Count(e.log(), "recovered a dead mount") - logged
		if b, err := os.ReadFile(filepath.Join(e.mnt, name)); err != nil || !bytes.Equal(b, want[name]) {
			t.Fatalf("round %d (%s): %s through the recovered mirror: %d bytes, %v", round, moment.name, name, len(b), err)
		}
		recovered++
	}
	pid := e.pid()
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
	afterRound(t, e, want)
	t.Logf("torture: kill -9 at random moments (seed %d) then start: %d/%d recovered (%d dead mounts cleared; %d kills struck a statfs), %d daemons outlived SIGKILL (a thread in D state) %v, %d files intact, in %v",
		seed, recovered, rounds, recoveries, inStatfs.Load(), len(stuck), stuck, len(want), time.Since(began).Round(time.Second))
}

func TestTortureSimultaneousStarts(t *testing.T) {
	e := newEnv(t)
	results := make([]result, 20)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = mirrorfs(t, e.dir, e.args()...)
		}()
	}
	wg.Wait()
	won, refused := 0, 0
	for _, r := range results {
		switch {
		case r.code == 0:
			won++
		case r.code == 3 && strings.Contains(r.stderr, "already running"):
			refused++
		default:
			t.Errorf("a simultaneous start: exit %d, %q", r.code, r.stderr)
		}
	}
	if won != 1 || refused != 19 {
		t.Errorf("20 simultaneous starts: %d won, %d refused; want 1 and 19", won, refused)
	}
	e.pids = append(e.pids, e.pid())
	if n := len(daemonsFor(t, e.dir)); n != 1 {
		t.Errorf("%d daemons running", n)
	}
	t.Logf("torture: 20 simultaneous starts on one mountpoint: %d won, %d already running", won, refused)
}

func TestTortureStartsOnManyMountpoints(t *testing.T) {
	envs := make([]*env, 20)
	for i := range envs {
		envs[i] = newEnv(t)
	}
	var wg sync.WaitGroup
	for _, e := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := mirrorfs(t, e.dir, e.args()...); r.code != 0 {
				t.Errorf("start on %s: exit %d, %q", e.mnt, r.code, r.stderr)
			}
		}()
	}
	wg.Wait()
	ok := 0
	for _, e := range envs {
		e.pids = append(e.pids, e.pid())
		if mounted(e.mnt) {
			ok++
		} else {
			t.Errorf("%s not mounted", e.mnt)
		}
	}
	t.Logf("torture: 20 simultaneous starts on 20 mountpoints: %d mounted", ok)
}

// TestStoppedDaemon: SIGSTOP blocks the clients, SIGCONT lets them go on.
func TestStoppedDaemon(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	var done atomic.Int64
	var failed atomic.Value
	quit := make(chan struct{})
	go func() {
		for {
			select {
			case <-quit:
				return
			default:
			}
			name := filepath.Join(e.mnt, "f")
			if err := os.WriteFile(name, []byte("x"), 0o644); err != nil {
				failed.Store(err)
			}
			done.Add(1)
		}
	}()
	eventually(t, "some I/O", func() bool { return done.Load() > 10 })
	syscall.Kill(pid, syscall.SIGSTOP)
	// Blocked means no progress; give it a moment to show (this only checks
	// the clients wait, it does not synchronise anything).
	before := done.Load()
	time.Sleep(200 * time.Millisecond)
	if moved := done.Load() - before; moved > 1 {
		t.Errorf("%d operations finished while the daemon was stopped", moved)
	}
	syscall.Kill(pid, syscall.SIGCONT)
	stalled := done.Load()
	eventually(t, "I/O after SIGCONT", func() bool { return done.Load() > stalled+10 })
	close(quit)
	if err, _ := failed.Load().(error); err != nil {
		t.Errorf("a client failed across SIGSTOP/SIGCONT: %v", err)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

func TestSourceRemovedUnderTheMount(t *testing.T) {
	e := newEnv(t)
	os.Mkdir(filepath.Join(e.src, "d"), 0o755)
	os.WriteFile(filepath.Join(e.src, "d", "f"), []byte("x"), 0o644)
	e.start()
	pid := e.pid()
	os.ReadFile(filepath.Join(e.mnt, "d", "f"))
	os.Chmod(filepath.Join(e.src, "d"), 0o000)
	// root ignores modes; what matters is that the daemon survives and
	// answers, so remove the source's contents outright as well.
	os.RemoveAll(filepath.Join(e.src, "d"))
	_, err := os.ReadFile(filepath.Join(e.mnt, "d", "f"))
	if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ESTALE) {
		t.Errorf("reading a removed file: %v, want ENOENT or ESTALE", err)
	}
	os.RemoveAll(e.src)
	if _, err := os.ReadDir(e.mnt); err == nil {
		t.Error("listing a mirror whose source is gone succeeded")
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("the daemon died when its source went away")
	}
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

// tmpfsAt mounts a small tmpfs at dir for the test.
func tmpfsAt(t *testing.T, dir, size string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

func TestFullSourceDisk(t *testing.T) {
	e := newEnv(t)
	tmpfsAt(t, e.src, "1m")
	e.start()
	pid := e.pid()
	err := os.WriteFile(filepath.Join(e.mnt, "big"), make([]byte, 4<<20), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing 4 MiB to a 1 MiB source: %v, want ENOSPC", err)
	}
	os.Remove(filepath.Join(e.mnt, "big"))
	if err := os.WriteFile(filepath.Join(e.mnt, "small"), []byte("fits"), 0o644); err != nil {
		t.Errorf("after ENOSPC, a small write: %v", err)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

func TestFullLogDisk(t *testing.T) {
	e := newEnv(t)
	logDir := filepath.Join(e.dir, "logfs")
	tmpfsAt(t, logDir, "64k")
	os.Chmod(logDir, 0o755) // a fresh tmpfs is 1777: refused for a log
	e.logf = filepath.Join(logDir, "mirrorfs.log")
	e.start()
	pid := e.pid()
	err := os.WriteFile(filepath.Join(logDir, "filler"), make([]byte, 128<<10), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the log's disk: %v, want ENOSPC", err)
	}
	// Each SIGHUP reopens the log and logs to the full disk; the next is
	// sent once the daemon recorded the reload (signals sent at once would
	// merge into a few).
	for i := 0; i < 50; i++ {
		before := lastReload(e)
		syscall.Kill(pid, syscall.SIGHUP)
		eventually(t, fmt.Sprintf("reload %d to be handled", i+1), func() bool {
			return lastReload(e).After(before)
		})
	}
	for i := 0; i < 100; i++ {
		if err := os.WriteFile(filepath.Join(e.mnt, "f"), []byte("still serving"), 0o644); err != nil {
			t.Fatalf("with the log's disk full: %v", err)
		}
	}
	if syscall.Kill(pid, 0) != nil || !mounted(e.mnt) {
		t.Fatal("the daemon did not survive a full log disk")
	}
	os.Remove(filepath.Join(logDir, "filler"))
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

// lastReload is when the daemon last recorded a reload in its state file
// (which lives beside the pidfile, not on the log's disk), or zero.
func lastReload(e *env) time.Time {
	b, err := os.ReadFile(daemon.StatePath(e.pidf))
	if err != nil {
		return time.Time{}
	}
	var st daemon.State
	if json.Unmarshal(b, &st) != nil || st.LastReload == nil {
		return time.Time{}
	}
	return st.LastReload.Time
}
