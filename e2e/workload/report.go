package workload

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Event is one call: what it was, how it ended ("" for success), when it
// began (Unix nanoseconds) and how long it took.
type Event struct {
	Op    string        `json:"op"`
	Errno string        `json:"errno,omitempty"`
	At    int64         `json:"at"`
	Took  time.Duration `json:"took"`
}

// Time is when the call began.
func (e Event) Time() time.Time { return time.Unix(0, e.At) }

// End is when the call returned.
func (e Event) End() time.Time { return e.Time().Add(e.Took) }

func (e Event) String() string {
	s := fmt.Sprintf("%s at %s took %v", e.Op, e.Time().Format("15:04:05.000000"), e.Took.Round(time.Microsecond))
	if e.Errno != "" {
		s = fmt.Sprintf("%s %s", s, e.Errno)
	}
	return s
}

// Proc is what one client process saw.
type Proc struct {
	Role     string           `json:"role"`
	ID       int              `json:"id"`
	Pid      int              `json:"pid"`
	Calls    int64            `json:"calls"`
	Failed   map[string]int64 `json:"failed"`   // "op ERRNO" → count
	Failures []Event          `json:"failures"` // the first maxFailures, in order
	Longest  Event            `json:"longest"`
	Slow     []Event          `json:"slow"`    // calls at least Config.Slow long, the first maxSlow
	Counter  int64            `json:"counter"` // holder: the last value written and synced
	Reopened int              `json:"reopened"`
}

// Report is what all the clients saw.
type Report struct {
	Procs []Proc
}

// Calls is how many calls the clients made.
func (r Report) Calls() int64 {
	var n int64
	for _, p := range r.Procs {
		n += p.Calls
	}
	return n
}

// Failed is how many calls failed, by "op ERRNO", over all clients.
func (r Report) Failed() map[string]int64 {
	all := map[string]int64{}
	for _, p := range r.Procs {
		for k, n := range p.Failed {
			all[k] += n
		}
	}
	return all
}

// FailedTotal is how many calls failed.
func (r Report) FailedTotal() int64 {
	var n int64
	for _, v := range r.Failed() {
		n += v
	}
	return n
}

// Expected are the failures a takeover may cause by the kernel's design,
// not the daemons': rename(2) resolves its two paths one after the other,
// and when the new mount comes on top between the two, they lie on two
// mounts (EXDEV), as across any mount change.
var Expected = []string{"rename EXDEV"}

// Unexpected counts the failures that are not Expected.
func (r Report) Unexpected() int64 {
	var n int64
	for k, v := range r.Failed() {
		if !slices.Contains(Expected, k) {
			n += v
		}
	}
	return n
}

// FailedWith counts the failures with one of errnos (by name, as ENOTCONN).
func (r Report) FailedWith(errnos ...string) int64 {
	var n int64
	for k, v := range r.Failed() {
		_, e, _ := strings.Cut(k, " ")
		if slices.Contains(errnos, e) {
			n += v
		}
	}
	return n
}

// Longest is the longest call any client made.
func (r Report) Longest() Event {
	var l Event
	for _, p := range r.Procs {
		if p.Longest.Took > l.Took {
			l = p.Longest
		}
	}
	return l
}

// Role is the first client of role, and whether there is one.
func (r Report) Role(role string) (Proc, bool) {
	for _, p := range r.Procs {
		if p.Role == role {
			return p, true
		}
	}
	return Proc{}, false
}

// LongestDuring is the longest recorded call that was under way at some
// moment between from and to (only calls at least Config.Slow long are
// recorded with their times; zero if none was).
func (r Report) LongestDuring(from, to time.Time) Event {
	var l Event
	for _, p := range r.Procs {
		for _, e := range p.Slow {
			if e.Took > l.Took && !e.End().Before(from) && !e.Time().After(to) {
				l = e
			}
		}
	}
	return l
}

// Window is a stretch of time in which failures are expected.
type Window struct{ From, To time.Time }

// FailuresOutside are the recorded failures, Expected ones aside, that
// were under way in none of ws, in time order.
func (r Report) FailuresOutside(ws []Window) []Event {
	var out []Event
	for _, p := range r.Procs {
		for _, e := range p.Failures {
			if !inAny(e, ws) && !slices.Contains(Expected, e.Op+" "+e.Errno) {
				out = append(out, e)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

func inAny(e Event, ws []Window) bool {
	for _, w := range ws {
		if !e.End().Before(w.From) && !e.Time().After(w.To) {
			return true
		}
	}
	return false
}

// Summary is a few lines for a test log: calls, failures, the longest call.
func (r Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d client processes, %d calls, %d failed", len(r.Procs), r.Calls(), r.FailedTotal())
	if f := r.Failed(); len(f) > 0 {
		keys := make([]string, 0, len(f))
		for k := range f {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, f[k]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "; longest call: %s", r.Longest())
	return b.String()
}
