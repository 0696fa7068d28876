package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cwdHolder is a shell whose working folder is inside the mirror; it runs
// `ls; cat f` each time it is asked, as a user sitting in that folder would.
type cwdHolder struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func holdCwd(t *testing.T, dir string) *cwdHolder {
	t.Helper()
	cmd := exec.Command("sh", "-c", `while read -r _; do ls; cat f 2>&1 || echo FAILED; echo; echo END; done`)
	cmd.Dir = dir
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &cwdHolder{cmd: cmd, in: in, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	t.Cleanup(h.release)
	return h
}

// ask has the shell list its folder and read f there, and returns what it
// printed; it fails the test if no answer comes within the wait limit.
func (h *cwdHolder) ask(t *testing.T) string {
	t.Helper()
	fmt.Fprintln(h.in)
	var got []string
	deadline := time.After(waitLimit)
	for {
		select {
		case line, ok := <-h.lines:
			if !ok || line == "END" {
				return strings.Join(got, "\n")
			}
			got = append(got, line)
		case <-deadline:
			t.Fatalf("the shell inside the mirror did not answer within %v: %q", waitLimit, got)
		}
	}
}

// release ends the shell, which lets go of its working folder.
func (h *cwdHolder) release() {
	h.in.Close()
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

// TestCtlUpgrade: mirrorfs-ctl upgrade replaces the daemon with one of the
// settings as they now are (an fsname= change, which takes a remount,
// shows in the mount table) while a file held open and a shell whose cwd is
// inside keep working; the pidfile names the new daemon; status and list
// show the old one draining until its holders let go, then it exits 0.
func TestCtlUpgrade(t *testing.T) {
	for _, mode := range []struct{ name, options string }{{"passthrough", ""}, {"nopassthrough", " -o nopassthrough"}} {
		t.Run(mode.name, func(t *testing.T) { testCtlUpgrade(t, mode.options) })
	}
}

func testCtlUpgrade(t *testing.T, options string) {
	e := newEnv(t)
	os.Mkdir(filepath.Join(e.src, "dir"), 0o755)
	os.WriteFile(filepath.Join(e.src, "dir", "f"), []byte("in dir"), 0o644)
	c := newCtl(e, fmt.Sprintf("OPTIONS=\"-o fsname=before%s\"\n", options))
	c.want("upgrade", 0, "mirrorfs: mounted") // nothing runs: it starts
	old := e.pid()
	e.pids = append(e.pids, old)

	held, err := os.OpenFile(filepath.Join(e.mnt, "held"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.WriteString("one "); err != nil {
		t.Fatal(err)
	}
	shell := holdCwd(t, filepath.Join(e.mnt, "dir"))
	if got := shell.ask(t); got != "f\nin dir" {
		t.Fatalf("shell inside before the upgrade: %q", got)
	}

	c = newCtl(e, fmt.Sprintf("OPTIONS=\"-o fsname=after%s\"\n", options))
	c.want("upgrade", 0, fmt.Sprintf("from pid %d", old))
	renewed := e.pid()
	e.pids = append(e.pids, renewed)
	if renewed == old || syscall.Kill(renewed, 0) != nil {
		t.Fatalf("pidfile names %d after the upgrade from %d", renewed, old)
	}
	if m, ok := mountAt(e.mnt); !ok || m.Source != "after" {
		t.Errorf("mount after the upgrade: %+v; want fsname after", m)
	}
	if syscall.Kill(old, 0) != nil {
		t.Fatalf("the old daemon %d left while a file was held open through it", old)
	}

	if _, err := held.WriteString("two"); err != nil {
		t.Errorf("write to the held file after the upgrade: %v", err)
	}
	if err := held.Sync(); err != nil {
		t.Errorf("fsync of the held file after the upgrade: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.src, "held")); string(b) != "one two" {
		t.Errorf("SOURCE has %q; want both writes", b)
	}
	if got := shell.ask(t); got != "f\nin dir" {
		t.Errorf("shell inside after the upgrade: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, "dir", "f")); err != nil || string(b) != "in dir" {
		t.Errorf("a new open after the upgrade: %q, %v", b, err)
	}

	c.want("status", 0, fmt.Sprintf("running (pid %d)", renewed))
	c.want("status", 0, fmt.Sprintf("draining:    pid %d since ", old))
	r := c.runArgs("list")
	if !strings.Contains(r.stdout, fmt.Sprintf("t\t%s\t%s\t%d\t", e.src, e.mnt, renewed)) ||
		!containsLine(r.stdout, fmt.Sprintf("\t%s\t%d\t-\t", e.mnt, old), "\tdraining") {
		t.Errorf("list does not show %d serving and %d draining:\n%s", renewed, old, r.stdout)
	}

	held.Close()
	shell.release()
	if code := waitExit(t, old); code != 0 {
		t.Errorf("the drained daemon exited with %d, want 0", code)
	}
	r = c.want("status", 0, fmt.Sprintf("running (pid %d)", renewed))
	if strings.Contains(r.stdout, "draining") {
		t.Errorf("status shows a draining daemon after it exited:\n%s", r.stdout)
	}
	c.want("stop", 0, "is free")
	waitExit(t, renewed)
	e.checkCleanLog()
}

// containsLine says whether a line of text contains part and ends in end.
func containsLine(text, part, end string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, part) && strings.HasSuffix(line, end) {
			return true
		}
	}
	return false
}

// TestCtlStopEndsDraining: stop ends the serving daemon and the draining
// one, says so, and leaves nothing of the instance running; what was held
// open through the old mount fails from then on.
func TestCtlStopEndsDraining(t *testing.T) {
	for _, mode := range []struct{ name, options string }{{"passthrough", ""}, {"nopassthrough", "OPTIONS=\"-o nopassthrough\"\n"}} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t)
			c := newCtl(e, mode.options)
			c.want("start", 0, "mirrorfs: mounted")
			old := e.pid()
			e.pids = append(e.pids, old)
			held, err := os.Create(filepath.Join(e.mnt, "held"))
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			c.want("restart", 0, fmt.Sprintf("from pid %d", old))
			renewed := e.pid()
			e.pids = append(e.pids, renewed)
			if renewed == old || syscall.Kill(old, 0) != nil {
				t.Fatalf("restart with a held file: pid %d -> %d; want the old one draining", old, renewed)
			}

			r := c.want("stop", 0, fmt.Sprintf("stopped draining pid %d", old))
			if !strings.Contains(r.stdout, fmt.Sprintf("stopped (pid %d)", renewed)) {
				t.Errorf("stop did not say it stopped %d:\n%s", renewed, r.stdout)
			}
			waitExit(t, old)
			waitExit(t, renewed)
			if pids := daemonsFor(t, e.dir); len(pids) != 0 {
				t.Errorf("daemons left after stop: %v", pids)
			}
			if mounted(e.mnt) {
				t.Error("stop left the mount")
			}
			if matches, _ := filepath.Glob(filepath.Join(e.dir, "run", "t.draining.*")); len(matches) != 0 {
				t.Errorf("stop left %v", matches)
			}
			c.want("status", 3, "not running")
		})
	}
}

// TestCtlUpgradeRefused: an upgrade that cannot be done (a broken policy
// file) exits non-zero with one line, and the daemon serves on unchanged.
func TestCtlUpgradeRefused(t *testing.T) {
	e := newEnv(t)
	policy := e.writePolicy("read_only = false\n")
	c := newCtl(e, "CONFIG="+policy+"\n")
	c.want("start", 0, "mirrorfs: mounted")
	pid := e.pid()
	e.pids = append(e.pids, pid)
	e.writePolicy("read_only = 'broken'\n")
	r := c.run("upgrade")
	if r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "policy.toml:1") {
		t.Errorf("upgrade with a broken policy: exit %d, %q; want non-zero and one line naming the policy file", r.code, r.stderr)
	}
	if e.pid() != pid || !mounted(e.mnt) {
		t.Errorf("a refused upgrade changed the daemon: pid %d -> %d, mounted %v", pid, e.pid(), mounted(e.mnt))
	}
	c.want("status", 0, fmt.Sprintf("running (pid %d)", pid))
	c.want("stop", 0, "is free")
}

// TestCtlUpgradeRefusesAUnit: a daemon that systemd runs as one of
// mirrorfs's units is neither upgraded nor restarted by the wrapper (a new
// daemon would be outside the unit); it says which unit, and the daemon
// serves on. The unit is played by a cgroup of that name in the hierarchy
// systemd would use.
func TestCtlUpgradeRefusesAUnit(t *testing.T) {
	e := newEnv(t)
	c := newCtl(e, "")
	c.want("start", 0, "mirrorfs: mounted")
	pid := e.pid()
	e.pids = append(e.pids, pid)
	unit := fmt.Sprintf("mirrorfs@ctltest%d.service", os.Getpid())
	enterCgroup(t, unit, pid)
	for _, verb := range []string{"upgrade", "restart"} {
		c.want(verb, 1, "runs as systemd's "+unit)
		if e.pid() != pid || syscall.Kill(pid, 0) != nil {
			t.Fatalf("%s of a unit's daemon replaced it: pid %d -> %d", verb, pid, e.pid())
		}
	}
	c.want("stop", 0, "is free")
}

// enterCgroup moves pid into a new cgroup named unit in the hierarchy that
// systemd names units by (name=systemd on a hybrid machine, else the
// unified one), and back out in cleanup.
func enterCgroup(t *testing.T, unit string, pid int) {
	t.Helper()
	var root string
	for _, dir := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup"} {
		if exists(filepath.Join(dir, "cgroup.procs")) {
			root = dir
			break
		}
	}
	if root == "" {
		t.Skip("no cgroup hierarchy to name a unit in")
	}
	dir := filepath.Join(root, unit)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0o644)
		os.Remove(dir)
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0o644); err != nil {
		t.Skipf("cannot move the daemon into a cgroup: %v", err)
	}
}
