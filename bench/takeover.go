package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	clients "mirrorfs/e2e/workload"
)

// The takeover part: what clients see while the daemon serving their
// mount is replaced, by a takeover and by a plain stop and start. The
// clients are the e2e workload (8 churning processes, a holder with a
// flock and a shared map, a process working in a folder under the mount);
// per restart it takes the longest any client call was under way during
// the restart, and the time from the command to ready.

// restart is one way of replacing the daemon; it returns when the new one
// is ready.
type restart struct {
	name   string
	rounds int
	do     func(tb *takeoverBench) error
}

type takeoverBench struct {
	src, mnt, pidf, log string
}

// restartStats is what one way of restarting measured.
type restartStats struct {
	name         string
	ready, stall []time.Duration // per restart
	failed       int64           // client calls that failed, over all restarts
	gone         int64           // of them ENOTCONN, ECONNABORTED, EIO or ESTALE
	calls        int64
	err          error
}

// benchTakeover runs the takeover part: n takeovers, then fewer plain stop
// and starts (each waits for the busy unmount's timeout), and returns its
// table.
func benchTakeover(n int) (string, error) {
	dir := filepath.Join(*work, "takeover")
	os.RemoveAll(dir)
	tb := &takeoverBench{src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"),
		pidf: filepath.Join(dir, "run", "takeover.pid"), log: filepath.Join(dir, "takeover.log")}
	for _, d := range []string{tb.src, tb.mnt, filepath.Join(dir, "reports")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	defer tb.teardown()
	ways := []restart{
		{"takeover", n, func(tb *takeoverBench) error { return tb.mirrorfs("--takeover") }},
		{"stop + start", max(3, n/10), (*takeoverBench).stopStart},
	}
	var all []restartStats
	for _, w := range ways {
		fmt.Fprintf(os.Stderr, "takeover part: %d × %s\n", w.rounds, w.name)
		all = append(all, tb.measure(w, filepath.Join(dir, "reports")))
	}
	return takeoverTable(all, n), nil
}

// mirrorfs runs the daemon on the part's source and mountpoint.
func (tb *takeoverBench) mirrorfs(extra ...string) error {
	args := append([]string{tb.src, tb.mnt, "--pidfile", tb.pidf, "--log", tb.log}, extra...)
	if out, err := exec.Command(*mirrorfs, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mirrorfs %v: %v: %s", extra, err, out)
	}
	return nil
}

// stopStart is `kill $(cat PIDFILE)`, wait until it is gone, start.
func (tb *takeoverBench) stopStart() error {
	pid, err := tb.pid()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d did not stop within a minute", pid)
		}
		time.Sleep(time.Millisecond)
	}
	return tb.mirrorfs()
}

func (tb *takeoverBench) pid() (int, error) {
	b, err := os.ReadFile(tb.pidf)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// measure starts a daemon and the workload, restarts w.rounds times with
// a pause between (the clients run on), and stops all.
func (tb *takeoverBench) measure(w restart, reports string) restartStats {
	st := restartStats{name: w.name}
	if st.err = tb.mirrorfs(); st.err != nil {
		return st
	}
	defer tb.stop()
	load, err := clients.Start(clients.Config{Mnt: tb.mnt, WorkDir: reports, Reopen: true})
	if err != nil {
		st.err = err
		return st
	}
	var windows []clients.Window
	for i := 0; i < w.rounds && st.err == nil; i++ {
		time.Sleep(300 * time.Millisecond) // the clients run between restarts
		began := time.Now()
		st.err = w.do(tb)
		windows = append(windows, clients.Window{From: began, To: time.Now()})
		st.ready = append(st.ready, time.Since(began))
	}
	time.Sleep(300 * time.Millisecond)
	r, err := load.Stop(time.Minute)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", w.name, err) // its calls are counted all the same
	}
	for _, win := range windows {
		st.stall = append(st.stall, r.LongestDuring(win.From, win.To).Took)
	}
	st.calls, st.failed = r.Calls(), r.FailedTotal()
	st.gone = r.FailedWith("ENOTCONN", "ECONNABORTED", "EIO", "ESTALE")
	return st
}

// stop ends the daemon that serves the part's mountpoint, and any left
// draining (the clients are gone, so they end as soon as they drained).
func (tb *takeoverBench) stop() {
	if pid, err := tb.pid(); err == nil {
		syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(time.Minute)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
}

// teardown leaves nothing mounted, even after a failure.
func (tb *takeoverBench) teardown() {
	tb.stop()
	for i := 0; i < 10 && mountedAt(tb.mnt); i++ {
		unix.Unmount(tb.mnt, unix.MNT_DETACH)
	}
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := max((len(s)*p+99)/100-1, 0)
	return ms(s[i])
}

// takeoverTable is the part's results, in markdown.
func takeoverTable(all []restartStats, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Restarting under load: takeover vs stop + start\n\n")
	fmt.Fprintf(&b, "%s. 11 client processes under the mount (8 churning files, one holding a file with a flock and a\n", machine())
	fmt.Fprintf(&b, "shared map, one working in a folder there). Per restart: the time from the command to ready, and the\n")
	fmt.Fprintf(&b, "longest any client call was under way during it; p50 / p99 / max over the restarts (ms).\n\n")
	fmt.Fprintf(&b, "| restart | restarts | to ready p50 / p99 / max | longest client call p50 / p99 / max | failed client calls | of them ENOTCONN, EIO, ESTALE |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|\n")
	for _, st := range all {
		if st.err != nil {
			fmt.Fprintf(&b, "| %s | %d | failed: %s | | | |\n", st.name, len(st.ready), firstLine(st.err.Error()))
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %s / %s / %s | %s / %s / %s | %d of %d | %d |\n", st.name, len(st.ready),
			num(pct(st.ready, 50)), num(pct(st.ready, 99)), num(pct(st.ready, 100)),
			num(pct(st.stall, 50)), num(pct(st.stall, 99)), num(pct(st.stall, 100)), st.failed, st.calls, st.gone)
	}
	return b.String()
}
