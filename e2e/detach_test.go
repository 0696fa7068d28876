package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// runEnv runs mirrorfs-ctl VERB for c's instance with extra environment.
func (c *ctl) runEnv(verb string, env ...string) result {
	c.e.t.Helper()
	cmd := exec.Command("sh", "../scripts/mirrorfs-ctl", verb, "t")
	cmd.Env = append(os.Environ(), "MIRRORFS="+bin, "MIRRORFS_CONF_DIR="+c.conf, "MIRRORFS_DEFAULTS=/nonexistent",
		"MIRRORFS_RUN_DIR="+filepath.Join(c.e.dir, "run"), "MIRRORFS_LOG_DIR="+filepath.Join(c.e.dir, "log"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	r := result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
	c.e.t.Logf("mirrorfs-ctl %s: exit %d\n%s%s", verb, r.code, r.stdout, r.stderr)
	return r
}

// killedMirror starts c's instance and kills it with SIGKILL: its dead
// mount stays at the mountpoint.
func killedMirror(t *testing.T, e *env, c *ctl) {
	t.Helper()
	c.want("start", 0, "mirrorfs: mounted")
	pid := e.pid()
	e.pids = append(e.pids, pid)
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, pid)
	if !mounted(e.mnt) {
		t.Fatal("kill -9 left no dead mount to test with")
	}
}

// TestCtlStopSymlinkSwap: stop after kill -9 detaches the dead mount by a
// descriptor of its root, not by its path: a user who can write to a
// folder on the way swaps it for a symlink to another mount right after
// the check that the mount is dead (here: as the check's `timeout`
// returns, the moment `umount -l PATH` came next), and the other mount
// stays.
func TestCtlStopSymlinkSwap(t *testing.T) {
	e := newEnv(t)
	parent := filepath.Join(e.dir, "p")
	e.mnt = filepath.Join(parent, "mnt")
	os.MkdirAll(e.mnt, 0o755)
	victim := filepath.Join(e.dir, "victim", "mnt")
	os.MkdirAll(victim, 0o755)
	if err := unix.Mount("tmpfs", victim, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(victim, unix.MNT_DETACH) })
	t.Cleanup(func() { unix.Unmount(filepath.Join(e.dir, "p.old", "mnt"), unix.MNT_DETACH) })
	c := newCtl(e, "")
	killedMirror(t, e, c)

	hooks := filepath.Join(e.dir, "hooks")
	os.Mkdir(hooks, 0o755)
	realTimeout, err := exec.LookPath("timeout")
	if err != nil {
		t.Skip("no timeout(1)")
	}
	hook := fmt.Sprintf("#!/bin/sh\n%s \"$@\"\nrc=$?\n[ -e %[2]s.old ] || { mv %[2]s %[2]s.old && ln -s %[3]s %[2]s; }\nexit $rc\n",
		realTimeout, parent, filepath.Dir(victim))
	os.WriteFile(filepath.Join(hooks, "timeout"), []byte(hook), 0o755)
	r := c.runEnv("stop", "PATH="+hooks+":"+os.Getenv("PATH"))
	if r.code != 0 {
		t.Errorf("stop: exit %d", r.code)
	}
	if m, ok := mountAt(victim); !ok || m.FSType != "tmpfs" {
		t.Fatalf("stop detached the mount a symlink swapped in (%+v, %v)", m, ok)
	}
}

// TestDetachDead: mirrorfs --detach-dead MNT detaches a dead mirrorfs
// mount and leaves alone (exit 5) what is not one: nothing mounted (a path
// through a symlink to a mount: the table never shows such a path),
// another file system, a live mirror; a relative path is a usage error.
func TestDetachDead(t *testing.T) {
	e := newEnv(t)
	other := filepath.Join(e.dir, "other")
	os.Mkdir(other, 0o755)
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(other, unix.MNT_DETACH) })
	link := filepath.Join(e.dir, "link")
	os.Symlink(other, link)
	e.start()
	for _, tt := range []struct {
		path string
		code int
		says string
	}{
		{link, 5, "nothing is mounted"},
		{other, 5, "holds a tmpfs mount"},
		{e.mnt, 5, "not dead"},
		{"mnt", 2, "not an absolute"},
		{e.mnt + "/", 2, "not an absolute, clean path"},
	} {
		r := mirrorfs(t, e.dir, "--detach-dead", tt.path)
		if r.code != tt.code || !strings.Contains(r.stderr, tt.says) {
			t.Errorf("--detach-dead %s: exit %d, %q; want %d, %q", tt.path, r.code, r.stderr, tt.code, tt.says)
		}
	}
	if m, ok := mountAt(other); !ok || m.FSType != "tmpfs" || !mounted(e.mnt) {
		t.Fatal("--detach-dead touched a mount it should have left alone")
	}
	pid := e.pid()
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, pid)
	if r := mirrorfs(t, e.dir, "--detach-dead", e.mnt); r.code != 0 || !strings.Contains(r.stdout, "detached the dead mount") {
		t.Errorf("--detach-dead on a dead mirror: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if _, ok := mountAt(e.mnt); ok {
		t.Error("the dead mount is still there")
	}
}
