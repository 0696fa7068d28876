package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctl runs scripts/mirrorfs-ctl for instance "t" of e, whose settings live
// in e.dir/conf/t.env and whose state lives in e.dir/run.
type ctl struct {
	e    *env
	conf string
}

func newCtl(e *env, extra string) *ctl {
	e.t.Helper()
	c := &ctl{e: e, conf: filepath.Join(e.dir, "conf")}
	os.MkdirAll(c.conf, 0o755)
	settings := fmt.Sprintf("SOURCE=%s\nMOUNTPOINT=%s\nUNMOUNT_TIMEOUT=1\n%s", e.src, e.mnt, extra)
	if err := os.WriteFile(filepath.Join(c.conf, "t.env"), []byte(settings), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.pidf = filepath.Join(e.dir, "run", "t.pid")
	e.logf = filepath.Join(e.dir, "log", "t.log")
	return c
}

func (c *ctl) run(verb string) result {
	c.e.t.Helper()
	cmd := exec.Command("sh", "../scripts/mirrorfs-ctl", verb, "t")
	cmd.Env = append(os.Environ(), "MIRRORFS="+bin, "MIRRORFS_CONF_DIR="+c.conf, "MIRRORFS_DEFAULTS=/nonexistent",
		"MIRRORFS_RUN_DIR="+filepath.Join(c.e.dir, "run"), "MIRRORFS_LOG_DIR="+filepath.Join(c.e.dir, "log"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if cmd.ProcessState == nil {
		c.e.t.Fatalf("mirrorfs-ctl %s did not run", verb)
	}
	r := result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
	c.e.t.Logf("mirrorfs-ctl %s: exit %d\n%s%s", verb, r.code, r.stdout, r.stderr)
	return r
}

func (c *ctl) want(verb string, code int, out string) result {
	c.e.t.Helper()
	r := c.run(verb)
	if r.code != code || !strings.Contains(r.stdout+r.stderr, out) {
		c.e.t.Errorf("mirrorfs-ctl %s: exit %d, %q; want %d and %q", verb, r.code, r.stdout+r.stderr, code, out)
	}
	return r
}

func TestCtlVerbs(t *testing.T) {
	e := newEnv(t)
	policy := e.writePolicy("read_only = false\n")
	c := newCtl(e, "CONFIG="+policy+"\n")
	c.want("status", 3, "not running")
	c.want("start", 0, "mirrorfs: mounted")
	first := e.pid()
	e.pids = append(e.pids, first)
	c.want("start", 0, fmt.Sprintf("already running (pid %d)", first))
	if got := len(daemonsFor(t, e.dir)); got != 1 {
		t.Errorf("%d daemons after two starts, want 1", got)
	}
	c.want("status", 0, fmt.Sprintf("running (pid %d)", first))
	r := c.run("status")
	for _, line := range []string{"mountpoint:  " + e.mnt + " (answers: yes)", "passthrough: on", "last reload: none"} {
		if !strings.Contains(r.stdout, line) {
			t.Errorf("status lacks %q:\n%s", line, r.stdout)
		}
	}

	c.want("reload", 0, "reloaded: read_only=false")
	e.writePolicy("read_only = 'broken'\n")
	before := e.state().LastReload.Time
	c.want("reload", 1, "policy file is broken; the daemon was not signalled")
	if e.state().LastReload.Time != before {
		t.Error("a broken policy file reached the daemon")
	}
	e.writePolicy("read_only = true\n")
	c.want("force-reload", 0, "reloaded: read_only=true")
	c.want("status", 0, "ok=true: read_only=true")

	syscall.Kill(first, syscall.SIGKILL)
	waitExit(t, first)
	c.want("status", 1, "dead, but pidfile")
	c.want("start", 0, "mirrorfs: mounted")
	second := e.pid()
	e.pids = append(e.pids, second)
	if !strings.Contains(e.log(), "recovered a dead mount") {
		t.Error("start after kill -9 did not recover the dead mount")
	}

	c.want("restart", 0, "mirrorfs: took over")
	third := e.pid()
	e.pids = append(e.pids, third)
	if third == second || syscall.Kill(second, 0) == nil && waitExit(t, second) != 0 {
		t.Errorf("restart: pid %d -> %d", second, third)
	}

	held, err := os.Open(filepath.Join(e.mnt, "."))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	c.want("stop", 0, "is free")
	if mounted(e.mnt) || exists(e.pidf) {
		t.Error("stop with a held file left the mount or the pidfile")
	}
	waitExit(t, third)
	c.want("stop", 0, "not running")
	c.want("status", 3, "not running")
}

// TestCtlNeverSignalsAStranger: a pidfile that names an unrelated process
// (a pid reused after a crash) is never signalled.
func TestCtlNeverSignalsAStranger(t *testing.T) {
	e := newEnv(t)
	c := newCtl(e, "")
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer stranger.Process.Kill()
	os.MkdirAll(filepath.Dir(e.pidf), 0o755)
	os.WriteFile(e.pidf, []byte(fmt.Sprintf("%d\n", stranger.Process.Pid)), 0o644)

	c.want("status", 1, "dead, but pidfile")
	c.want("stop", 0, "not running")
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("stop signalled the stranger: %v", err)
	}

	// The lock held by a process that is not mirrorfs: unknown.
	lock := strings.TrimSuffix(e.pidf, ".pid") + ".lock"
	os.WriteFile(lock, nil, 0o600)
	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	c.want("status", 4, "unknown")
	c.want("stop", 1, "not signalling it")
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("stop signalled the stranger: %v", err)
	}
}

// TestMountHelper mounts the way mount(8) and fstab do, through mount.fuse3.
func TestMountHelper(t *testing.T) {
	e := newEnv(t)
	helper, err := exec.LookPath("mount.fuse3")
	if err != nil {
		t.Fatalf("mount.fuse3 (fuse3) is needed: %v", err)
	}
	os.WriteFile(filepath.Join(e.src, "f"), []byte("via fstab"), 0o644)
	policy := e.writePolicy("hide = ['secret']\n")
	os.WriteFile(filepath.Join(e.src, "secret"), nil, 0o644)
	opts := "ro,nofail,_netdev,noauto,defaults,x-systemd.automount,config=" + policy + ",pidfile=" + e.pidf + ",log=" + e.logf
	cmd := exec.Command(helper, e.src, e.mnt, "-t", "mirrorfs", "-o", opts)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount.fuse3: %v: %s", err, out)
	}
	e.pids = append(e.pids, e.pid())
	pid := e.pid()
	if b, _ := os.ReadFile(filepath.Join(e.mnt, "f")); string(b) != "via fstab" {
		t.Errorf("mirror shows %q", b)
	}
	if _, err := os.Stat(filepath.Join(e.mnt, "secret")); !os.IsNotExist(err) {
		t.Errorf("config= was not applied: secret is visible (%v)", err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "w"), nil, 0o644); err == nil {
		t.Error("ro was not applied")
	}
	if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	e.stopped(pid)
}

func TestSystemdUnitsVerify(t *testing.T) {
	requireFUSE(t)
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze (package systemd) is needed: %v", err)
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"mirrorfs@.service", "mirrorfs-forking@.service"} {
		b, err := os.ReadFile(filepath.Join("..", "scripts", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart exists: point it at the binary under test.
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/mirrorfs"), []byte(bin))
		unit := filepath.Join(dir, strings.Replace(name, "@", "@test", 1))
		os.WriteFile(unit, b, 0o644)
		units = append(units, unit)
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestNotifySocket runs the daemon as systemd's Type=notify would and reads
// what it tells systemd: READY=1 once mounted, RELOADING=1 with
// MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1 on SIGTERM.
func TestNotifySocket(t *testing.T) {
	e := newEnv(t)
	sock := filepath.Join(e.dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(bin, e.args()...) // no -f: NOTIFY_SOCKET alone keeps it in the foreground
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pids = append(e.pids, cmd.Process.Pid)
	next := func(want string) string {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(waitLimit))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), want) {
			t.Fatalf("notify: %q, %v; want %q\nstderr: %s", buf[:n], err, want, stderr.String())
		}
		return string(buf[:n])
	}
	next("READY=1")
	if !mounted(e.mnt) || e.pid() != cmd.Process.Pid {
		t.Fatalf("READY=1 before the mount, or the daemon forked (pidfile %d, started %d)", e.pid(), cmd.Process.Pid)
	}
	syscall.Kill(cmd.Process.Pid, syscall.SIGHUP)
	if msg := next("RELOADING=1"); !strings.Contains(msg, "\nMONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", msg)
	}
	next("READY=1")
	syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	next("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v", err)
	}
	if mounted(e.mnt) {
		t.Error("still mounted")
	}
}

// TestMountCommand mounts with mount(8) itself, which finds mirrorfs on
// the system's PATH only: the binary under test is linked into
// /usr/local/bin for the test, unless a mirrorfs is installed there.
func TestMountCommand(t *testing.T) {
	e := newEnv(t)
	const installed = "/usr/local/bin/mirrorfs"
	if _, err := os.Lstat(installed); err == nil {
		t.Skipf("%s exists; not replacing an installed mirrorfs", installed)
	}
	if err := os.Symlink(bin, installed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(installed) })
	os.WriteFile(filepath.Join(e.src, "f"), []byte("mount -t"), 0o644)
	out, err := exec.Command("mount", "-t", "fuse.mirrorfs", e.src, e.mnt, "-o",
		"ro,nofail,pidfile="+e.pidf+",log="+e.logf).CombinedOutput()
	if err != nil {
		t.Fatalf("mount -t fuse.mirrorfs: %v: %s", err, out)
	}
	pid := e.pid()
	e.pids = append(e.pids, pid)
	if b, _ := os.ReadFile(filepath.Join(e.mnt, "f")); string(b) != "mount -t" {
		t.Errorf("mirror shows %q", b)
	}
	if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	e.stopped(pid)
}
