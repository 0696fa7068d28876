package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A "does it answer" probe of a FUSE mount runs in a child process, never
// on a thread of the daemon: a thread waiting on a mount whose server is
// stopped (or is this very process, dying) can keep the process from ever
// ending. The child is this binary again, in a hidden mode chosen by the
// environment (so that the C stage's gate, which reads the arguments, sees
// no mount request); it statfs'es the mount's root, given as descriptor 3,
// or the path in MIRRORFS_PROBE_PATH, and writes the errno's number. A child
// that does not answer in time is killed: a FUSE request gives way to
// SIGKILL.

// probeTimeout bounds the probe of a mountpoint found in the mount table.
const probeTimeout = 2 * time.Second

// errNoAnswer means a probe did not return in time.
var errNoAnswer = errors.New("does not answer")

const (
	probeEnv     = "MIRRORFS_PROBE"      // "fd": descriptor 3; "path": probePathEnv
	probePathEnv = "MIRRORFS_PROBE_PATH" // the path to statfs
)

// probeInChild statfs'es the mount open at fd (or, when fd < 0, at path)
// from a child process, within timeout. It returns nil, the errno the
// child saw, or errNoAnswer.
func probeInChild(path string, fd int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Env = []string{probeEnv + "=path", probePathEnv + "=" + path}
	if fd >= 0 {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(dup), path)
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f}
		cmd.Env = []string{probeEnv + "=fd"}
	}
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return errNoAnswer
	}
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("probe said %q", out)
	}
	if n != 0 {
		return syscall.Errno(n)
	}
	return nil
}

// probeChild is the child's side: one statfs, its errno on stdout.
func probeChild(mode string, env Env) int {
	var st unix.Statfs_t
	var err error
	switch mode {
	case "fd":
		err = unix.Fstatfs(3, &st)
	case "path":
		err = unix.Statfs(env.Getenv(probePathEnv), &st)
	default:
		fmt.Fprintf(env.Stderr, "mirrorfs: %s=%q: unknown probe\n", probeEnv, mode)
		return ExitUsage
	}
	var errno syscall.Errno
	if err != nil && !errors.As(err, &errno) {
		errno = syscall.EIO
	}
	fmt.Fprintln(env.Stdout, int(errno))
	return ExitOK
}
