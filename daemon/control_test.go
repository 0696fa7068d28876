package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
)

// control starts a control socket for a pidfile in a fresh folder, and a
// main loop that answers each call with answer.
func control(t *testing.T, answer func(ctlCall) ctlReply) (string, <-chan ctlCall) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "run", "x.pid")
	dir, err := openOwnDir(filepath.Dir(pidfile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	calls := make(chan ctlCall, 8)
	s, err := listenControl(dir, pidfile, calls, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close(true) })
	served := make(chan ctlCall, 8)
	go func() {
		for c := range calls {
			if c.reply != nil {
				c.reply <- answer(c)
			}
			served <- c
		}
	}()
	return pidfile, served
}

func TestControlRoundTrip(t *testing.T) {
	want := fs.MountID{ID: 42, Unique: true}
	pidfile, served := control(t, func(c ctlCall) ctlReply {
		return ctlReply{Pid: os.Getpid(), Mount: want}
	})
	fi, err := os.Lstat(ControlPath(pidfile))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("control socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	cc, err := dialControl(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := cc.call(ctlRequest{Op: "hello", Mountpoint: "/m"}, 5*time.Second)
	if err != nil || r.Mount != want {
		t.Fatalf("hello: %+v, %v; want mount %+v", r, err, want)
	}
	if c := <-served; c.req.Op != "hello" || c.req.Mountpoint != "/m" || c.peer != os.Getpid() {
		t.Errorf("the main loop got %+v", c)
	}
	cc.close()
	select {
	case c := <-served:
		if c.req.Op != "bye" {
			t.Errorf("after hanging up: %+v, want a bye", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no bye within 10s of hanging up")
	}
}

// An answer naming another pid than the socket's peer is refused: the
// new daemon acts on what the old one says only if it is the old one.
func TestControlRefusesAnAnswerFromAnotherPid(t *testing.T) {
	pidfile, _ := control(t, func(ctlCall) ctlReply { return ctlReply{Pid: os.Getpid() + 1} })
	cc, err := dialControl(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.close()
	if _, err := cc.call(ctlRequest{Op: "hello"}, 5*time.Second); err == nil || !strings.Contains(err.Error(), "peer") {
		t.Fatalf("hello: %v, want a refusal naming the peer", err)
	}
}

func TestControlRefusalIsAnError(t *testing.T) {
	pidfile, _ := control(t, func(ctlCall) ctlReply {
		return ctlReply{Pid: os.Getpid(), Error: "another takeover is under way"}
	})
	cc, err := dialControl(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.close()
	if _, err := cc.call(ctlRequest{Op: "hello"}, 5*time.Second); err == nil || err.Error() != "another takeover is under way" {
		t.Fatalf("hello: %v, want the refusal", err)
	}
}

// A socket left by a killed daemon answers nothing: the caller is told
// so at once, not after a timeout.
func TestControlNobodyListening(t *testing.T) {
	pidfile, _ := control(t, func(ctlCall) ctlReply { return ctlReply{} })
	os.Remove(ControlPath(pidfile))
	if _, err := dialControl(pidfile); err == nil || !strings.Contains(err.Error(), "no control socket answers") {
		t.Fatalf("dial: %v", err)
	}
}

// The sweep removes the records of killed draining daemons of this
// instance, and nothing else: not a live one's (it holds the flock), not
// another instance's files whose name begins the same way.
func TestSweepDrainRecords(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "run", "x.pid")
	p, err := AcquirePidfile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	dir := filepath.Dir(pidfile)
	for _, name := range []string{"x.draining.123", "x.draining.7.pid", "x.draining.abc", "x.draining.0042", "x.draining.456"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	live, err := os.Open(filepath.Join(dir, "x.draining.456"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := unix.Flock(int(live.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	sweepDrainRecords(p)
	for name, want := range map[string]bool{"x.draining.123": false, "x.draining.7.pid": true,
		"x.draining.abc": true, "x.draining.0042": true, "x.draining.456": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", name, err == nil, want)
		}
	}
}

// lockHolder names the mirrorfs process holding the lock, and no other:
// this test binary holds it, and is not mirrorfs.
func TestLockHolderIsMirrorfsOnly(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "run", "x.pid")
	p, err := AcquirePidfile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if pid := lockHolder(pidfile); pid != 0 {
		t.Errorf("lockHolder = %d, want 0 for a holder that is not mirrorfs", pid)
	}
	if pid := lockHolder(filepath.Join(t.TempDir(), "none.pid")); pid != 0 {
		t.Errorf("lockHolder of no lock = %d", pid)
	}
}
