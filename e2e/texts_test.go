package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadyLineSaysBothReadOnlys: an -o ro mount under a policy without
// read_only says both, on the terminal and in the log.
func TestReadyLineSaysBothReadOnlys(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		policy := e.writePolicy("read_only = false\n")
		r := e.start(append([]string{"-o", "ro", "--config", policy}, mode...)...)
		if !strings.Contains(r.stdout, "mount ro, policy read_only=false") {
			t.Errorf("ready message: %q", r.stdout)
		}
		if !strings.Contains(e.log(), `mount=ro policy="read_only=false`) {
			t.Errorf("ready log line lacks the mount's ro:\n%s", e.log())
		}
		e.stopWithin(e.pid(), 15*time.Second)
	})
}

// TestFusermountFailureText: fusermount3's refusal (a user mounting on a
// folder not theirs) reaches the user as one line with its exit status,
// not go-fuse's wait status and stray separators.
func TestFusermountFailureText(t *testing.T) {
	e := newEnv(t)
	openUp(e)
	uid, gid := adversary(t)
	os.Chown(e.src, uid, gid)
	os.Chmod(e.mnt, 0o755) // root's: fusermount3 refuses it to another user
	home := filepath.Join(e.dir, "home")
	os.Mkdir(home, 0o700)
	os.Chown(home, uid, gid)
	out, err := asAdversary(t, "env", "XDG_RUNTIME_DIR="+home, bin, e.src, e.mnt,
		"--pidfile", filepath.Join(home, "p.pid"), "--log", filepath.Join(home, "l.log"))
	if err == nil {
		t.Fatalf("a user mounted on root's folder: %s", out)
	}
	for _, bad := range []string{"code 256", " ; :", "exited with code"} {
		if strings.Contains(out, bad) {
			t.Errorf("message has %q: %s", bad, out)
		}
	}
	if !strings.Contains(out, "fusermount3 exited with status 1: ") || !strings.Contains(out, "fusermount3: ") {
		t.Errorf("message lacks the helper's status and words: %s", out)
	}
}
