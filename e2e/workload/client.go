package workload

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// roleEnv carries a client's spec (JSON) to the copy of the program that
// plays it.
const roleEnv = "MIRRORFS_WORKLOAD"

// spec is what one client process is told.
type spec struct {
	Role   string        `json:"role"`
	ID     int           `json:"id"`
	Mnt    string        `json:"mnt"`
	Pause  time.Duration `json:"pause"`
	Slow   time.Duration `json:"slow"`
	Report string        `json:"report"` // where it writes its Proc, as JSON
	Reopen bool          `json:"reopen"` // holder, cwd: start again through MNT after ENOTCONN
}

// Caps on what a client records one by one (the counts are always whole).
const (
	maxFailures = 2000
	maxSlow     = 50000
)

// RunIfAsked plays the client role named in the environment, if any, and
// exits; otherwise it returns at once. Call it first thing in main (or in
// an init of a test package), before flags are parsed.
func RunIfAsked() {
	raw := os.Getenv(roleEnv)
	if raw == "" {
		return
	}
	var s spec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(2)
	}
	os.Exit(play(s))
}

// client is one running client: its spec, what it saw, and whether it was
// told to stop.
type client struct {
	spec
	p    Proc
	stop atomic.Bool
}

func play(s spec) int {
	c := &client{spec: s, p: Proc{Role: s.Role, ID: s.ID, Pid: os.Getpid(), Failed: map[string]int64{}}}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		c.stop.Store(true)
	}()
	roles := map[string]func() error{"churn": c.churn, "holder": c.holder, "lockprobe": c.lockprobe, "cwd": c.cwd}
	role, ok := roles[s.Role]
	if !ok {
		fmt.Fprintf(os.Stderr, "workload: no role %q\n", s.Role)
		return 2
	}
	err := role()
	if werr := c.writeReport(); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "workload %s %d: %v\n", s.Role, s.ID, err)
		return 1
	}
	return 0
}

func (c *client) writeReport() error {
	b, err := json.Marshal(c.p)
	if err != nil {
		return err
	}
	return os.WriteFile(c.Report, b, 0o644)
}

// ready tells the parent the client has set up and is looping.
func ready() { os.Stdout.WriteString("ready\n") }

// call runs one system call, timing it, and records how it ended.
func (c *client) call(op string, f func() error) error {
	began := time.Now()
	err := f()
	c.record(op, began, time.Since(began), err)
	return err
}

// record counts one call; an error that is no errno is recorded as the
// check that failed (its text, as BADDATA).
func (c *client) record(op string, began time.Time, took time.Duration, err error) {
	c.p.Calls++
	e := Event{Op: op, At: began.UnixNano(), Took: took}
	if err != nil {
		e.Errno = errnoName(err)
		c.p.Failed[op+" "+e.Errno]++
		if len(c.p.Failures) < maxFailures {
			c.p.Failures = append(c.p.Failures, e)
		}
	}
	if took > c.p.Longest.Took {
		c.p.Longest = e
	}
	if took >= c.Slow && len(c.p.Slow) < maxSlow {
		c.p.Slow = append(c.p.Slow, e)
	}
}

// errnoName is err's errno by name (ENOENT), or the text of a check.
func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return fmt.Sprintf("errno%d", int(errno))
	}
	return err.Error()
}

// check is a failed check on what a call returned (wrong data, wrong size).
type check string

func (c check) Error() string { return string(c) }

// isGone says whether err means the mount the call went to is gone.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

func (c *client) pause() {
	if c.Pause > 0 {
		time.Sleep(c.Pause)
	}
}
