//go:build linux && cgo

package stagetest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// statusPipe returns a status pipe whose write end already holds words.
func statusPipe(t *testing.T, words string) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := w.WriteString(words); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// sleeper is a process of the test's own, in a process group of its own,
// for the stage to signal; extra are descriptors it inherits (fd 3 on).
type sleeper struct {
	cmd    *exec.Cmd
	status chan syscall.WaitStatus
}

func newSleeper(t *testing.T, extra ...*os.File) *sleeper {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sleeper{cmd: cmd, status: make(chan syscall.WaitStatus, 1)}
	go func() {
		cmd.Wait()
		s.status <- cmd.ProcessState.Sys().(syscall.WaitStatus)
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return s
}

func (s *sleeper) pid() int { return s.cmd.Process.Pid }

// endedBy checks the sleeper was ended by sig, within a deadline.
func (s *sleeper) endedBy(t *testing.T, sig syscall.Signal) {
	t.Helper()
	select {
	case ws := <-s.status:
		if !ws.Signaled() || ws.Signal() != sig {
			t.Errorf("the process ended with %v, want killed by %v", ws, sig)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the process was not signalled (want %v)", sig)
	}
}

func (s *sleeper) alive(t *testing.T) {
	t.Helper()
	select {
	case ws := <-s.status:
		t.Errorf("a process the stage should have left alone ended: %v", ws)
	default:
	}
}

func TestLineReaderOK(t *testing.T) {
	s := newSleeper(t)
	r, _ := statusPipe(t, "start 1 5000 /var/log/x.log\nok mounted src at mnt\n")
	got := Wait(r, s.pid(), 0, 0)
	if got.Code != 0 || got.Stdout != "mounted src at mnt\n" || got.Stderr != "" {
		t.Errorf("after ok: %+v, want exit 0 and the text on stdout", got)
	}
}

// A line the first read cuts in two is put together again: the reader's
// buffer holds 4095 bytes, so the padding ends one line two bytes short.
func TestLineReaderJoinsACutLine(t *testing.T) {
	pad := strings.Repeat(strings.Repeat("x", 99)+"\n", 40) + strings.Repeat("y", 92) + "\n"
	if len(pad) != 4093 {
		t.Fatalf("padding is %d bytes", len(pad))
	}
	s := newSleeper(t)
	r, _ := statusPipe(t, pad+"ok cut in two\n")
	if got := Wait(r, s.pid(), 0, 0); got.Code != 0 || got.Stdout != "cut in two\n" {
		t.Errorf("a line across two reads: %+v, want exit 0 and %q", got, "cut in two\n")
	}
}

// An overlong line is dropped, not taken for the end of the pipe.
func TestLineReaderDropsAnOverlongLine(t *testing.T) {
	s := newSleeper(t)
	r, _ := statusPipe(t, strings.Repeat("z", 10000)+"\nok after\n")
	if got := Wait(r, s.pid(), 0, 0); got.Code != 0 || got.Stdout != "after\n" {
		t.Errorf("after an overlong line: %+v, want exit 0 and %q", got, "after\n")
	}
}

// The exit codes: the daemon's code when it is one a shell can tell from a
// signal's, 1 otherwise; 1 for an end of file before any outcome.
func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		words, stderr string
		code          int
	}{
		{"err 3 mirrorfs: already running (pid 7)\n", "mirrorfs: already running (pid 7)\n", 3},
		{"err 2 mirrorfs: usage\n", "mirrorfs: usage\n", 2},
		{"err 125 x\n", "x\n", 125},
		{"err 126 x\n", "x\n", 1},
		{"err 255 x\n", "x\n", 1},
		{"err 0 x\n", "x\n", 1},
		{"err -4 x\n", "x\n", 1},
		{"err x\n", "err x\n", 1},
		{"start 1 5000 /l\n", "mirrorfs: the daemon exited before it was ready (see its log: /l)\n", 1},
		{"", "mirrorfs: the daemon exited before it was ready (see its log: none yet)\n", 1},
	} {
		s := newSleeper(t)
		r, w := statusPipe(t, tt.words)
		w.Close() // the daemon is gone
		if got := Wait(r, s.pid(), 0, 0); got.Code != tt.code || got.Stderr != tt.stderr || got.Stdout != "" {
			t.Errorf("%q then end of file: %+v, want exit %d and stderr %q", tt.words, got, tt.code, tt.stderr)
		}
		s.alive(t)
	}
}

// Without a first word the original gives up after FirstWord: SIGTERM to
// the daemon's process group (its pid is not known yet), SIGKILL after
// StopGrace, exit 1.
func TestDeadlineFirstWord(t *testing.T) {
	s := newSleeper(t)
	r, _ := statusPipe(t, "")
	got := Wait(r, s.pid(), 0, 0)
	if got.Code != 1 || !strings.Contains(got.Stderr, "not ready within --ready-timeout") || !strings.Contains(got.Stderr, "did not stop; killed it") {
		t.Errorf("no word at all: %+v", got)
	}
	if got.Took < FirstWord+StopGrace || got.Took > FirstWord+StopGrace+5*time.Second {
		t.Errorf("gave up after %v, want %v and a little", got.Took, FirstWord+StopGrace)
	}
	s.endedBy(t, syscall.SIGTERM)
}

// "start PID MS" replaces the first-word bound with MS, and from then on
// the stop goes to PID alone.
func TestDeadlineFromStart(t *testing.T) {
	group, daemon := newSleeper(t), newSleeper(t)
	r, _ := statusPipe(t, "start "+strconv.Itoa(daemon.pid())+" 1 /l\n")
	got := Wait(r, group.pid(), 0, 0)
	if got.Code != 1 || !strings.Contains(got.Stderr, "not ready") {
		t.Errorf("ready timeout of 1 ms: %+v", got)
	}
	if got.Took >= FirstWord {
		t.Errorf("gave up after %v: the start line's 1 ms did not replace the first-word bound %v", got.Took, FirstWord)
	}
	daemon.endedBy(t, syscall.SIGTERM)
	group.alive(t)
}

// After "err", the original waits StopGrace at most for the daemon's end
// of file, then exits with the code it was told.
func TestDeadlineAfterErr(t *testing.T) {
	s := newSleeper(t)
	r, _ := statusPipe(t, "err 4 mirrorfs: no\n") // the write end stays open
	got := Wait(r, s.pid(), 0, 0)
	if got.Code != 4 || got.Took < StopGrace || got.Took >= FirstWord {
		t.Errorf("err without end of file: %+v, want exit 4 after %v", got, StopGrace)
	}
	s.alive(t)
}

// A signal to the original stops the daemon and exits 128+signal once the
// daemon is gone.
func TestInterruptedExitCode(t *testing.T) {
	r, w := statusPipe(t, "")
	d := newSleeper(t, w) // the daemon holds the write end
	w.Close()
	got := Wait(r, d.pid(), 0, syscall.SIGINT)
	if got.Code != 128+int(syscall.SIGINT) || !strings.Contains(got.Stderr, "interrupted; stopping the daemon") {
		t.Errorf("interrupted: %+v, want exit %d", got, 128+int(syscall.SIGINT))
	}
	d.endedBy(t, syscall.SIGTERM)
}

// A daemon that goes on SIGTERM ends the wait at its end of file: exit 1,
// without waiting out the grace.
func TestStopEndsAtEOF(t *testing.T) {
	r, w := statusPipe(t, "")
	d := newSleeper(t, w)
	w.WriteString("start " + strconv.Itoa(d.pid()) + " 1 /l\n")
	w.Close()
	got := Wait(r, d.pid(), 0, 0)
	if got.Code != 1 || got.Took >= FirstWord {
		t.Errorf("stopped daemon gone: %+v, want exit 1 at once", got)
	}
	d.endedBy(t, syscall.SIGTERM)
}

// The stage reads --ready-timeout as Go does, for the durations it bounds
// the first word with; what Go would refuse, it leaves to Go.
func TestDurationMs(t *testing.T) {
	for in, want := range map[string]int64{
		"2m": 120000, "90s": 90000, "1m30s": 90000, "1.5h": 5400000, "250ms": 250,
		"1500us": 1, "1500µs": 1, "1500μs": 1, "2000000ns": 2,
		"": -1, "2": -1, "-1s": -1, "s": -1, "2x": -1, "1m2": -1,
		"nans": -1, "infs": -1, " 2s": -1, "+2s": -1, "1e400s": -1,
	} {
		if got := DurationMs(in); got != want {
			t.Errorf("DurationMs(%q) = %d, want %d", in, got, want)
		}
	}
}

// A --ready-timeout longer than the stage's own bound on the first word
// bounds it instead; a shorter one leaves the bound alone.
func TestFirstWordFollowsALongReadyTimeout(t *testing.T) {
	base := []string{"mirrorfs", "/src", "/mnt"}
	for _, c := range []struct {
		extra []string
		want  time.Duration
	}{
		{nil, FirstWord},
		{[]string{"--ready-timeout", "2m"}, 2 * time.Minute},
		{[]string{"--ready-timeout=90s"}, 90 * time.Second},
		{[]string{"--ready-timeout", "1ms"}, FirstWord},
		{[]string{"--ready-timeout", "soon"}, FirstWord},
	} {
		if got := FirstWordAfter(append(base, c.extra...)); got != c.want {
			t.Errorf("first word bound after %q: %v, want %v", c.extra, got, c.want)
		}
	}
}
