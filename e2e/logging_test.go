package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSIGHUPReopensTheLog(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	rotated := e.logf + ".1"
	if err := os.Rename(e.logf, rotated); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGHUP)
	eventually(t, "a new log file after SIGHUP", func() bool {
		return strings.Contains(e.log(), "log reopened")
	})
	fi, err := os.Stat(e.logf)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new log: %v, mode %v; want 0640", err, fi.Mode().Perm())
	}
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
	if !strings.Contains(e.log(), "msg=exit") {
		t.Errorf("the exit went to the old log, not the new one:\n%s", e.log())
	}
	if old, _ := os.ReadFile(rotated); !strings.Contains(string(old), "msg=ready") || strings.Contains(string(old), "msg=exit") {
		t.Errorf("rotated log:\n%s", old)
	}
}

// TestCrashOutputInLog checks that what the Go runtime prints when it dies
// reaches the log, not /dev/null: SIGABRT makes it dump every goroutine.
func TestCrashOutputInLog(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	syscall.Kill(pid, syscall.SIGABRT)
	if code := waitExit(t, pid); code != 2 {
		t.Errorf("SIGABRT: exit %d, want the Go runtime's 2", code)
	}
	if log := e.log(); !strings.Contains(log, "SIGABRT") || !strings.Contains(log, "goroutine ") {
		t.Errorf("the runtime's crash report is not in the log:\n%s", log)
	}
}

func TestRefusesWithoutFusermountAsUser(t *testing.T) {
	e := newEnv(t)
	os.Chmod(filepath.Dir(e.dir), 0o755) // t.TempDir makes both 0700
	os.Chmod(e.dir, 0o755)
	run := filepath.Join(e.dir, "userrun")
	os.Mkdir(run, 0o755)
	os.Chown(run, 65534, 65534)
	cmd := exec.Command(bin, e.src, e.mnt, "--pidfile", filepath.Join(run, "x.pid"), "--log", filepath.Join(run, "x.log"))
	cmd.Env = []string{"PATH=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		t.Fatal(err)
	}
	want := "mirrorfs: fusermount3 not found on PATH: install fuse3 (only root mounts without it)\n"
	if cmd.ProcessState.ExitCode() != 1 || string(out) != want {
		t.Errorf("as a user without fusermount3: %v, %q; want exit 1 and %q", err, out, want)
	}
}

func TestRefusesWithoutDevFuse(t *testing.T) {
	e := newEnv(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare is not installed")
	}
	// A private mount namespace where /dev holds only null.
	script := `set -e
mkdir "$D/dev"; mount --bind /dev "$D/dev"
mount -t tmpfs none /dev; touch /dev/null; mount --bind "$D/dev/null" /dev/null
exec "$BIN" "$D/src" "$D/mnt" --pidfile "$D/x.pid" --log "$D/x.log"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "D="+e.dir, "BIN="+bin)
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.HasPrefix(string(out), "mirrorfs: no /dev/fuse") || strings.Count(string(out), "\n") != 1 {
		t.Errorf("without /dev/fuse: exit %d, %q", cmd.ProcessState.ExitCode(), out)
	}
}
