package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
)

// The mirror's statistics (fs.Stats) are published beside the pidfile, in
// NAME.prom, in Prometheus's text format: `mirrorfs-ctl stats` reads it,
// and so can node_exporter's textfile collector. A goroutine of its own
// rewrites it every statsInterval, only when a request was answered since
// (an idle mirror costs a wake-up and a few loads), and never asks the
// mount anything: a hung mount leaves the file as it last was, its time
// saying how old it is. The file is the daemon's user's alone (0600):
// counts and timings of requests tell of other users' activity.
const statsInterval = time.Second

// StatsPath is where the statistics of the daemon holding pidfile are kept.
func StatsPath(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".prom"
}

// statsWriter publishes the current session's counters: a remount makes a
// new session, with counters of its own, which publishStats hands over.
type statsWriter struct {
	path        string
	mountpoint  string
	log         *slog.Logger
	cur         atomic.Pointer[fs.Stats]
	stopc, done chan struct{}
}

// publishStats starts publishing the mirror's counters, or switches to
// those of a new session. It runs on the main goroutine.
func (d *daemon) publishStats() {
	s := d.mirror.Stats()
	if s == nil {
		return
	}
	if d.stats != nil {
		d.stats.cur.Store(s)
		return
	}
	w := &statsWriter{path: StatsPath(d.cfg.Pidfile), mountpoint: d.cfg.Mountpoint, log: d.log,
		stopc: make(chan struct{}), done: make(chan struct{})}
	w.cur.Store(s)
	d.stats = w
	go w.run()
}

// close stops publishing and removes the file.
func (w *statsWriter) close() {
	if w == nil {
		return
	}
	w.stop()
	os.Remove(w.path)
}

// stop stops publishing, leaving the file as it is: after a takeover it
// is the new daemon's.
func (w *statsWriter) stop() {
	if w == nil {
		return
	}
	close(w.stopc)
	<-w.done
}

func (w *statsWriter) run() {
	defer close(w.done)
	tick := time.NewTicker(statsInterval)
	defer tick.Stop()
	var last *fs.Stats
	var answered uint64
	for {
		s := w.cur.Load()
		if n := s.Answered(); s != last || n != answered {
			last, answered = s, n
			if err := writePrivate(w.path, formatStats(s.Snapshot(), w.mountpoint, time.Now())); err != nil {
				w.log.Warn("statistics file", "path", w.path, "err", err)
			}
		}
		select {
		case <-w.stopc:
			return
		case <-tick.C:
		}
	}
}

// writePrivate replaces path atomically with b, mode 0600.
func writePrivate(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".stats-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// quantiles are the latency quantiles given by operation.
var quantiles = []float64{0.5, 0.99}

// formatStats writes snap in Prometheus's text format (version 0.0.4).
// Every series carries the mountpoint, so that the files of several
// mirrors can be collected together.
func formatStats(snap fs.Snapshot, mountpoint string, now time.Time) []byte {
	var b bytes.Buffer
	mnt := `mountpoint="` + escapeLabel(mountpoint) + `"`
	family := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	gauge := func(name, help string, v float64) {
		family(name, "gauge", help)
		fmt.Fprintf(&b, "%s{%s} %s\n", name, mnt, num(v))
	}
	gauge("mirrorfs_stats_start_time_seconds", "When the counters began: the mount (or the last remount).", float64(snap.Since.UnixNano())/1e9)
	gauge("mirrorfs_stats_time_seconds", "When these figures were taken.", float64(now.UnixNano())/1e9)
	gauge("mirrorfs_open_files", "Files open through the mirror.", float64(snap.OpenFiles))
	gauge("mirrorfs_open_dirs", "Folders open through the mirror.", float64(snap.OpenDirs))
	gauge("mirrorfs_passthrough_files", "Open files whose reads and writes the kernel does itself (passthrough).", float64(snap.PassthroughOpen))
	family("mirrorfs_requests_total", "counter", "Requests answered, by operation.")
	for _, o := range snap.Ops {
		fmt.Fprintf(&b, "mirrorfs_requests_total{%s,op=%q} %d\n", mnt, o.Name, o.Count)
	}
	family("mirrorfs_errors_total", "counter", "Requests answered with an error, by operation and errno.")
	for _, o := range snap.Ops {
		for _, e := range sortedErrnos(o.Errors) {
			fmt.Fprintf(&b, "mirrorfs_errors_total{%s,op=%q,errno=%q} %d\n", mnt, o.Name, errnoName(e), o.Errors[e])
		}
	}
	family("mirrorfs_request_latency_seconds", "gauge", "Latency quantiles since the counters began, by operation (estimated from the histogram).")
	for _, o := range snap.Ops {
		for _, q := range quantiles {
			fmt.Fprintf(&b, "mirrorfs_request_latency_seconds{%s,op=%q,quantile=\"%s\"} %s\n", mnt, o.Name, num(q), num(o.Quantile(q).Seconds()))
		}
	}
	family("mirrorfs_request_duration_seconds", "histogram", "Time to answer a request, by operation.")
	for _, o := range snap.Ops {
		writeHistogram(&b, mnt, o)
	}
	return b.Bytes()
}

func writeHistogram(b *bytes.Buffer, mnt string, o fs.OpStat) {
	var cum uint64
	for i, n := range o.Lat {
		cum += n
		le := "+Inf"
		if limit := fs.BucketLimit(i); limit > 0 {
			le = num(limit.Seconds())
		}
		fmt.Fprintf(b, "mirrorfs_request_duration_seconds_bucket{%s,op=%q,le=%q} %d\n", mnt, o.Name, le, cum)
	}
	fmt.Fprintf(b, "mirrorfs_request_duration_seconds_sum{%s,op=%q} %s\n", mnt, o.Name, num(o.Sum.Seconds()))
	fmt.Fprintf(b, "mirrorfs_request_duration_seconds_count{%s,op=%q} %d\n", mnt, o.Name, o.Count)
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// escapeLabel escapes a label value as the text format wants it.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func sortedErrnos(m map[int]uint64) []int {
	return slices.Sorted(maps.Keys(m))
}

// errnoName is the symbolic name of errno e ("ENOENT"), "other" for a
// status that is no errno.
func errnoName(e int) string {
	if name := unix.ErrnoName(syscall.Errno(e)); e > 0 && name != "" {
		return name
	}
	return "other"
}
