// Package e2e drives the real mirrorfs binary as a user would. The daemon
// always runs in another process (a process reading its own mount can
// deadlock); every mount a test makes is detached in its cleanup.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// bin is the mirrorfs binary under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	runProbeIfAsked() // the test binary as the hostile user's tool
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mirrorfs-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // tests run the binary as an unprivileged user too
	bin = filepath.Join(dir, "mirrorfs")
	args := []string{"build", "-o", bin}
	if os.Getenv("MIRRORFS_RACE") != "" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...)
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building mirrorfs: %v\n%s", err, out)
		return 1
	}
	// Daemons detach from their parent; as a subreaper this process adopts
	// them, so tests can reap them and read their exit status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		return 1
	}
	return m.Run()
}
