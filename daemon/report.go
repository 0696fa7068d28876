package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Exit codes.
const (
	ExitOK             = 0
	ExitFailure        = 1
	ExitUsage          = 2
	ExitAlreadyRunning = 3
	ExitMountLost      = 4 // the mount died under the daemon (ErrMountLost)
)

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrUsage):
		return ExitUsage
	case errors.Is(err, ErrAlreadyRunning):
		return ExitAlreadyRunning
	case errors.Is(err, ErrMountLost):
		return ExitMountLost
	}
	return ExitFailure
}

// reporter tells the user how the start went: through the status pipe to the
// waiting original process when detached, on the terminal otherwise.
type reporter struct {
	pipe           *os.File // nil in the foreground, and once the outcome is told
	stdout, stderr io.Writer
}

func newReporter(s stage, env Env) *reporter {
	r := &reporter{stdout: env.Stdout, stderr: env.Stderr}
	if s.ran {
		r.pipe = os.NewFile(uintptr(s.statusFd), "status-pipe")
	}
	return r
}

// start tells the waiting process our pid, how long to wait for us and
// where our log is.
func (r *reporter) start(readyTimeout time.Duration, log string) {
	if r.pipe != nil {
		fmt.Fprintf(r.pipe, "start %d %d %s\n", os.Getpid(), readyTimeout.Milliseconds(), log)
	}
}

// ready reports success; the original process prints msg and exits 0.
func (r *reporter) ready(msg string) {
	if r.pipe == nil {
		fmt.Fprintln(r.stdout, msg)
		return
	}
	fmt.Fprintf(r.pipe, "ok %s\n", oneLine(msg))
	r.close()
}

// fail reports err and returns the exit code that goes with it.
func (r *reporter) fail(err error) int {
	code := exitCode(err)
	msg := "mirrorfs: " + oneLine(err.Error())
	if code == ExitUsage {
		msg += " (see mirrorfs --help)"
	}
	if r.pipe == nil {
		fmt.Fprintln(r.stderr, msg)
		return code
	}
	// The pipe stays open until the process exits: the waiting process
	// returns only then, so that no daemon outlives a failed start.
	fmt.Fprintf(r.pipe, "err %d %s\n", code, msg)
	return code
}

func (r *reporter) close() {
	if r.pipe != nil {
		r.pipe.Close()
		r.pipe = nil
	}
}

// oneLine folds a multi-line message (fusermount3's, say) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ; ")), " ")
}
