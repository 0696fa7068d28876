package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const nobody = 65534

// asNobody runs a command as an unprivileged user and returns its output.
func asNobody(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openUp lets other users walk to e's folders (t.TempDir makes them 0700).
func openUp(e *env) {
	os.Chmod(filepath.Dir(e.dir), 0o755)
	os.Chmod(e.dir, 0o755)
}

func TestOtherUsersShutOutWithoutAllowOther(t *testing.T) {
	e := newEnv(t)
	openUp(e)
	os.WriteFile(filepath.Join(e.src, "public"), []byte("p"), 0o644)
	e.start()
	if out, err := asNobody(t, "cat", filepath.Join(e.mnt, "public")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("another user read the mirror without allow_other: %v, %q", err, out)
	}
}

func TestAllowOtherLetsTheKernelCheckPermissions(t *testing.T) {
	e := newEnv(t)
	openUp(e)
	os.WriteFile(filepath.Join(e.src, "public"), []byte("p"), 0o644)
	os.WriteFile(filepath.Join(e.src, "private"), []byte("secret"), 0o600)
	own := filepath.Join(e.src, "own")
	os.Mkdir(own, 0o755)
	os.Chown(own, nobody, nobody)
	e.start("-o", "allow_other")
	if out, err := asNobody(t, "cat", filepath.Join(e.mnt, "public")); err != nil || out != "p" {
		t.Errorf("reading a 0644 file as another user: %v, %q", err, out)
	}
	if out, err := asNobody(t, "cat", filepath.Join(e.mnt, "private")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("another user read a root 0600 file through the mirror: %v, %q", err, out)
	}
	if out, err := asNobody(t, "touch", filepath.Join(e.mnt, "denied")); err == nil {
		t.Errorf("another user created a file in root's 0755 folder: %q", out)
	}
	if out, err := asNobody(t, "touch", filepath.Join(e.mnt, "own", "mine")); err != nil {
		t.Fatalf("creating in one's own folder: %v, %q", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(own, "mine"), &st); err != nil || st.Uid != nobody || st.Gid != nobody {
		t.Errorf("a file created by uid %d is owned by %d:%d on the source (%v)", nobody, st.Uid, st.Gid, err)
	}
}

// TestFilesOfTheDaemonHaveExplicitModes: the daemon runs with umask 0 (for
// the mirror), yet nothing it creates for itself is writable by others.
func TestFilesOfTheDaemonHaveExplicitModes(t *testing.T) {
	e := newEnv(t)
	e.pidf = filepath.Join(e.dir, "fresh", "run", "x.pid")
	e.logf = filepath.Join(e.dir, "fresh", "log", "x.log")
	e.start()
	for path, want := range map[string]os.FileMode{
		filepath.Dir(e.pidf): 0o755, e.pidf: 0o644, e.logf: 0o640,
		filepath.Dir(e.logf): 0o755, strings.TrimSuffix(e.pidf, ".pid") + ".state": 0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %04o", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestRuntimeFolderWritableByOthersRefused(t *testing.T) {
	e := newEnv(t)
	shared := filepath.Join(e.dir, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	r := mirrorfs(t, e.dir, e.src, e.mnt, "--pidfile", filepath.Join(shared, "x.pid"), "--log", e.logf)
	if r.code != 1 || !strings.Contains(r.stderr, "is writable by others (mode 0777); refusing it") {
		t.Errorf("exit %d, %q", r.code, r.stderr)
	}
}
