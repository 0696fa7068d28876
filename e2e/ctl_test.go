package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCtlStopAfterKill9: stop after kill -9 detaches the dead mount it
// left, then status says "not running" (3); a live mount of another file
// system at the mountpoint is never touched.
func TestCtlStopAfterKill9(t *testing.T) {
	e := newEnv(t)
	c := newCtl(e, "")
	c.want("start", 0, "mirrorfs: mounted")
	pid := e.pid()
	e.pids = append(e.pids, pid)
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, pid)
	if !mounted(e.mnt) {
		t.Fatal("kill -9 left no dead mount to test with")
	}
	c.want("stop", 0, "detached the dead mount")
	if _, ok := mountAt(e.mnt); ok {
		t.Error("stop left the dead mount")
	}
	c.want("status", 3, "not running")

	if err := unix.Mount("tmpfs", e.mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(e.mnt, unix.MNT_DETACH)
	c.want("stop", 0, "not ours, left alone")
	if m, ok := mountAt(e.mnt); !ok || m.FSType != "tmpfs" {
		t.Errorf("stop touched another file system's mount: %+v %v", m, ok)
	}
}

// TestCtlStatusCodes: status stays within LSB's 0-4: an instance without
// settings is unknown (4), and so is a daemon that runs but whose mount
// does not answer (SIGSTOP), found out within the status's own deadline.
func TestCtlStatusCodes(t *testing.T) {
	e := newEnv(t)
	c := newCtl(e, "")
	os.Remove(filepath.Join(c.conf, "t.env"))
	c.want("status", 4, "no settings")
	c.want("start", 6, "no settings")

	c = newCtl(e, "")
	c.want("start", 0, "mirrorfs: mounted")
	pid := e.pid()
	e.pids = append(e.pids, pid)
	syscall.Kill(pid, syscall.SIGSTOP)
	defer syscall.Kill(pid, syscall.SIGCONT)
	began := time.Now()
	c.want("status", 4, "does not answer")
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("status of a stopped daemon took %v", took)
	}
	syscall.Kill(pid, syscall.SIGCONT)
	c.want("status", 0, "(answers: yes)")
	c.want("stop", 0, "is free")
}

// TestCtlEnvFile: the settings file is read by systemd's EnvironmentFile=
// rules, never run as shell; a comment after a value (which systemd keeps
// as part of the value) is refused with its line; a missing SOURCE names
// the files that were read.
func TestCtlEnvFile(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "my data")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("spaced"), 0o644)
	marker := filepath.Join(e.dir, "ran")
	policy := e.writePolicy("hide = ['secret']\n")
	os.WriteFile(filepath.Join(src, "secret"), nil, 0o644)
	c := newCtl(e, "")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(c.conf, "t.env"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	write(fmt.Sprintf("MOUNTPOINT=%s\nOPTIONS=\"-o allow_other\"   # optional\n", e.mnt))
	r := c.want("start", 6, `t.env:2: OPTIONS: systemd reads the value as '-o allow_other# optional'`)
	systemdReads(t, filepath.Join(c.conf, "t.env"), "OPTIONS", "-o allow_other# optional")
	if strings.Contains(r.stderr, "SOURCE") {
		t.Error("went on after a refused line")
	}

	write(fmt.Sprintf("MOUNTPOINT=%s\n", e.mnt))
	c.want("start", 6, "SOURCE is not set (read "+filepath.Join(c.conf, "t.env")+")")

	write(fmt.Sprintf("# settings\n  SOURCE = \"%s\"\nMOUNTPOINT=%s\nCONFIG='%s'\nOPTIONS=-o ro\nUNMOUNT_TIMEOUT=3\nOTHER=$(touch %s)\n",
		src, e.mnt, policy, marker))
	c.want("start", 0, "mirrorfs: mounted")
	e.pids = append(e.pids, e.pid())
	if b, _ := os.ReadFile(filepath.Join(e.mnt, "f")); string(b) != "spaced" {
		t.Errorf("SOURCE with a blank: mirror shows %q", b)
	}
	if exists(filepath.Join(e.mnt, "secret")) {
		t.Error("CONFIG was not applied")
	}
	if os.WriteFile(filepath.Join(e.mnt, "w"), nil, 0o644) == nil {
		t.Error("OPTIONS=-o ro was not applied")
	}
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", e.pid())); !strings.Contains(string(cmdline), "--unmount-timeout\x003s") {
		t.Errorf("UNMOUNT_TIMEOUT was not passed: %q", cmdline)
	}
	if exists(marker) {
		t.Error("the settings file was run as shell")
	}
	c.want("stop", 0, "is free")
}

// TestCtlRefusedStartLeavesLogAlone: a second daemon for a running
// instance is refused and writes nothing into the running daemon's log.
func TestCtlRefusedStartLeavesLogAlone(t *testing.T) {
	e := newEnv(t)
	e.start()
	before := e.log()
	r := mirrorfs(t, e.dir, e.args()...)
	if r.code != 3 || !strings.Contains(r.stderr, "already running") {
		t.Fatalf("second start: exit %d, %q; want 3, already running", r.code, r.stderr)
	}
	if after := e.log(); after != before {
		t.Errorf("a refused start wrote into the running daemon's log:\n%s", strings.TrimPrefix(after, before))
	}
	e.stopWithin(e.pid(), 15*time.Second)
}
