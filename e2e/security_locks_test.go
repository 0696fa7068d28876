package e2e

import (
	"bytes"
	"context"
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
)

// Locks through the mirror: a user waiting for a lock, or many, must not
// hold the daemon's threads; a waiter that is killed goes away at once; and
// a flock ends with the file it was taken on, whoever else has the file
// open.

func init() {
	probes["lockwait"] = lockWaitProbe
}

// lockWaitProbe opens args[0] and waits for a lock on it, of kind args[1]
// ("posix": fcntl F_SETLKW; "flock"), exclusive; it prints "locked" once
// it has it, and ends (letting it go).
func lockWaitProbe(args []string) error {
	f, err := os.OpenFile(args[0], os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if args[1] == "flock" {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	} else {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", args[1], err)
	}
	fmt.Println("locked")
	return nil
}

// waiter is a probe run by the hostile user in the background.
type waiter struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

// startWaiter starts lockwait on path in e's mirror as the hostile user;
// it is killed and reaped in cleanup, if still there.
func startWaiter(t *testing.T, e *env, path, kind string) *waiter {
	t.Helper()
	uid, gid := adversary(t)
	if probeBinErr != nil {
		t.Fatalf("copying the test binary for probes: %v", probeBinErr)
	}
	w := &waiter{cmd: exec.Command(probeBin, path, kind), done: make(chan struct{})}
	w.cmd.Dir = "/"
	w.cmd.Env = append(os.Environ(), probeEnv+"=lockwait")
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { w.end(t, e) })
	return w
}

// end kills w and reaps it. A waiter that a request to the mirror keeps
// is freed by killing the daemon (the kernel then ends its requests).
func (w *waiter) end(t *testing.T, e *env) {
	w.cmd.Process.Kill()
	select {
	case <-w.done:
		return
	case <-time.After(2 * time.Second):
	}
	if pid := e.pid(); pid > 0 {
		t.Errorf("waiter %d: still there 2s after SIGKILL; killing the daemon %d", w.cmd.Process.Pid, pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case <-w.done:
	case <-time.After(waitLimit):
		t.Errorf("waiter %d: not reaped within %v of the daemon's end", w.cmd.Process.Pid, waitLimit)
	}
}

func (w *waiter) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// blocked tells whether w is in the lock call (fcntl or flock): its
// request has gone to the mirror.
func (w *waiter) blocked() bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", w.cmd.Process.Pid))
	for _, task := range tasks { // the probe's goroutine is on any of its threads
		b, _ := os.ReadFile(task)
		nr, _, _ := strings.Cut(string(b), " ")
		if nr == strconv.Itoa(unix.SYS_FCNTL) || nr == strconv.Itoa(unix.SYS_FLOCK) {
			return true
		}
	}
	return false
}

// threads is the number of threads of process pid.
func threads(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no Threads: in /proc/%d/status", pid)
	return 0
}

// lockHeld takes an exclusive lock of kind on f, without waiting.
func lockHeld(t *testing.T, f *os.File, kind string) {
	t.Helper()
	var err error
	if kind == "flock" {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	} else {
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
	}
	if err != nil {
		t.Fatalf("taking the %s lock: %v", kind, err)
	}
}

// lockFile is a fresh file in e's source that everyone may lock, and its
// path in the mirror.
func lockFile(t *testing.T, e *env, name string) string {
	t.Helper()
	src := filepath.Join(e.src, name)
	if err := os.WriteFile(src, []byte("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(src, 0o666); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(e.mnt, name)
}

// lockWaiters are what the hostile user starts against one lock.
const lockWaiters = 40

// TestLockWaitersHoldNoDaemonThread: many users waiting for a lock held
// through the mirror do not each hold a thread of the daemon; killed, they
// go away at once; and a waiter still gets the lock once it is let go.
func TestLockWaitersHoldNoDaemonThread(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		for _, kind := range []string{"posix", "flock"} {
			t.Run(kind, func(t *testing.T) { testLockWaiters(t, kind, mode) })
		}
	})
}

func testLockWaiters(t *testing.T, kind string, mode []string) {
	e := newEnv(t)
	openUp(e)
	e.start(append([]string{"-o", "allow_other"}, mode...)...)
	path := lockFile(t, e, "locked")
	holder, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	lockHeld(t, holder, kind)
	pid := e.pid()
	before := threads(t, pid)

	var ws []*waiter
	for i := 0; i < lockWaiters; i++ {
		ws = append(ws, startWaiter(t, e, path, kind))
	}
	eventually(t, "every waiter to wait in the lock call", func() bool {
		for _, w := range ws {
			if w.exited() {
				t.Fatalf("a waiter ended while the lock is held: %s", w.out.String())
			}
			if !w.blocked() {
				return false
			}
		}
		return true
	})
	// The daemon reads each request at once: for a while, its threads
	// must stay bounded while they all wait.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n := threads(t, pid); n >= before+10 {
			t.Errorf("%d waiters took the daemon from %d to %d threads", lockWaiters, before, n)
			break
		}
	}

	for _, w := range ws {
		w.cmd.Process.Kill()
	}
	deadline := time.After(5 * time.Second)
	for _, w := range ws {
		select {
		case <-w.done:
		case <-deadline:
			t.Fatalf("killed waiters are still there after 5s, with the lock still held")
		}
	}
	if n := threads(t, pid); n >= before+10 {
		t.Errorf("after the waiters went, the daemon has %d threads, %d before", n, before)
	}

	last := startWaiter(t, e, path, kind)
	eventually(t, "the last waiter to wait", last.blocked)
	if last.exited() {
		t.Fatalf("the last waiter ended while the lock is held: %s", last.out.String())
	}
	holder.Close() // lets the lock go
	select {
	case <-last.done:
	case <-time.After(waitLimit):
		t.Fatalf("the lock let go, the last waiter still waits")
	}
	if out := last.out.String(); last.cmd.ProcessState.ExitCode() != 0 || out != "locked\n" {
		t.Errorf("the last waiter: exit %d, %q", last.cmd.ProcessState.ExitCode(), out)
	}
}

// TestFlockEndsWithItsFile: a flock taken by the first opener of a file
// (whose file description passthrough might have kept as the backing file)
// is gone when she closes it, though another still has the file open.
func TestFlockEndsWithItsFile(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		openUp(e)
		e.start(append([]string{"-o", "allow_other"}, mode...)...)
		path := lockFile(t, e, "shared")
		a, err := os.OpenFile(path, os.O_RDWR, 0) // the first open of the inode
		if err != nil {
			t.Fatal(err)
		}
		lockHeld(t, a, "flock")
		b, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := asAdversary(t, "flock", "-n", "-x", path, "true"); err == nil {
			t.Fatal("another took the flock while its holder has it")
		}
		a.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		for {
			out, err := asAdversary(t, "flock", "-n", "-x", path, "true")
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("the flock outlived its holder's close while another has the file open: %v %s", err, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "x" {
			t.Errorf("reading the file after: %q, %v", b, err)
		}
		if log := e.log(); len(mode) == 0 && (!strings.Contains(log, "msg=passthrough state=on") || strings.Contains(log, "state=\"off")) {
			t.Errorf("passthrough is not on, or went off:\n%s", log)
		}
	})
}
