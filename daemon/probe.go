package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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
// or the path in MIRRORFS_PROBE_PATH. It writes "armed" just before the
// statfs and the errno's number after it. The timeout runs from "armed":
// on a loaded machine a new process can wait seconds for its first turn on
// a CPU, and that wait says nothing of the mount. A child that does not
// answer in time is killed (a FUSE request not yet taken by its server
// gives way to SIGKILL) and reaped in the background: one the server took
// and never answers waits on until the connection ends, and the daemon
// must not wait with it.

// probeTimeout bounds the probe's statfs of a mountpoint found in the
// mount table; probeStartLimit bounds the child's start, up to "armed".
const (
	probeTimeout    = 2 * time.Second
	probeStartLimit = 30 * time.Second
)

// errNoAnswer means a probe did not return in time.
var errNoAnswer = errors.New("does not answer")

const (
	probeEnv     = "MIRRORFS_PROBE"      // "fd": descriptor 3; "path": probePathEnv
	probePathEnv = "MIRRORFS_PROBE_PATH" // the path to statfs
	probeArmed   = "armed"               // the child's first line
)

// probeExe is the program the probe runs: this binary.
var probeExe = "/proc/self/exe"

// probeInChild statfs'es the mount open at fd (or, when fd < 0, at path)
// from a child process, within timeout of the child's being armed. It
// returns nil, the errno the child saw, or errNoAnswer.
func probeInChild(path string, fd int, timeout time.Duration) error {
	cmd := exec.Command(probeExe)
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
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	lines := make(chan string, 2)
	go readLines(out, lines)
	answer, err := awaitAnswer(lines, timeout)
	if err != nil {
		cmd.Process.Kill()
		go cmd.Wait()
		return err
	}
	for range lines { // the child exits once it answered
	}
	cmd.Wait()
	n, convErr := strconv.Atoi(answer)
	if convErr != nil {
		return fmt.Errorf("probe said %q", answer)
	}
	if n != 0 {
		return syscall.Errno(n)
	}
	return nil
}

// readLines sends r's lines to lines and closes it at the end.
func readLines(r io.Reader, lines chan<- string) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		lines <- strings.TrimSpace(s.Text())
	}
	close(lines)
}

// awaitAnswer waits for "armed" within probeStartLimit, then for the
// answer within timeout.
func awaitAnswer(lines <-chan string, timeout time.Duration) (string, error) {
	first, ok, late := nextLine(lines, probeStartLimit)
	switch {
	case late:
		return "", fmt.Errorf("probe: the child did not start within %v", probeStartLimit)
	case !ok:
		return "", errors.New("probe: the child ended before it was armed")
	case first != probeArmed:
		return "", fmt.Errorf("probe said %q", first)
	}
	answer, ok, late := nextLine(lines, timeout)
	switch {
	case late:
		return "", errNoAnswer
	case !ok:
		return "", errors.New("probe: the child ended without an answer")
	}
	return answer, nil
}

// nextLine waits up to limit for a line: ok false says the child's output
// ended, late that the limit passed first.
func nextLine(lines <-chan string, limit time.Duration) (line string, ok, late bool) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case line, ok = <-lines:
		return line, ok, false
	case <-timer.C:
		return "", false, true
	}
}

// probeChild is the child's side: "armed", one statfs, its errno.
func probeChild(mode string, env Env) int {
	var st unix.Statfs_t
	var err error
	fmt.Fprintln(env.Stdout, probeArmed)
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
