package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// run calls Main with its output captured and an environment of env.
func runMain(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(append([]string{"mirrorfs"}, args...), Env{
		Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] },
	})
	return code, stdout.String(), stderr.String()
}

func TestMainHelpShowsTheDefaults(t *testing.T) {
	code, out, _ := runMain(t, nil, "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"(default " + DefaultReadyTimeout.String() + ")",
		"(default " + DefaultUnmountTimeout.String() + ")",
		"4 the mount died",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if strings.Contains(out, "{{") {
		t.Errorf("--help shows a placeholder:\n%s", out)
	}
}

func TestMainVersion(t *testing.T) {
	if code, out, _ := runMain(t, nil, "-V"); code != ExitOK || !strings.HasPrefix(out, "mirrorfs "+shortVersion()+"\ngo-fuse ") {
		t.Errorf("-V: exit %d, %q", code, out)
	}
}

func TestMainUsageError(t *testing.T) {
	code, out, errOut := runMain(t, nil, "--bogus", "a", "b")
	if code != ExitUsage || out != "" || !strings.Contains(errOut, `unknown option "--bogus"`) || !strings.Contains(errOut, "--help") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestMainCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.toml"), filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("read_only = true\n"), 0o644)
	os.WriteFile(bad, []byte("read_only = \"maybe\"\n"), 0o644)
	if code, out, _ := runMain(t, nil, "--check-config", good); code != ExitOK || !strings.Contains(out, "ok (read_only=true") {
		t.Errorf("good: exit %d, %q", code, out)
	}
	if code, _, errOut := runMain(t, nil, "--check-config", bad); code != ExitFailure || !strings.Contains(errOut, "bad.toml") {
		t.Errorf("bad: exit %d, %q", code, errOut)
	}
}

// Without the C stage and without NOTIFY_SOCKET a background start is refused.
func TestMainBackgroundNeedsTheStage(t *testing.T) {
	code, _, errOut := runMain(t, nil, "src", "mnt")
	if code != ExitFailure || !strings.Contains(errOut, "pre-runtime stage") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestExitCodeOfALostMount(t *testing.T) {
	if got := exitCode(ErrMountLost); got != ExitMountLost || ExitMountLost == ExitFailure {
		t.Errorf("exitCode(ErrMountLost) = %d", got)
	}
}

// Each mount sets the same GOMAXPROCS: the sizing is computed once, not
// from the value the last mount left.
func TestProcsSameAtEachMount(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	p := fuseProcs(func(string) string { return "" })
	for range 3 {
		p.around(func() error {
			if n := runtime.GOMAXPROCS(0); n != p.readers {
				t.Errorf("GOMAXPROCS %d while mounting, want %d", n, p.readers)
			}
			return nil
		})
		if n := runtime.GOMAXPROCS(0); n != p.serving {
			t.Errorf("GOMAXPROCS %d after mounting, want %d", n, p.serving)
		}
	}
}
