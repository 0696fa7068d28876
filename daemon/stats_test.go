package daemon

import (
	"strings"
	"testing"
	"time"

	"mirrorfs/fs"
)

// TestFormatStats: the statistics are valid Prometheus text: each family
// announced once, labels escaped, histograms cumulative up to +Inf.
func TestFormatStats(t *testing.T) {
	o := fs.OpStat{Name: "GETATTR", Count: 3, Sum: 3 * time.Microsecond, Errors: map[int]uint64{2: 1, 0: 1}}
	o.Lat[1], o.Lat[2] = 2, 1
	snap := fs.Snapshot{Since: time.Unix(100, 0), Ops: []fs.OpStat{o}, OpenFiles: 2, PassthroughOpen: 1}
	text := string(formatStats(snap, "/mnt/a \"b\"", time.Unix(200, 0)))
	for _, want := range []string{
		`mirrorfs_open_files{mountpoint="/mnt/a \"b\""} 2`,
		`mirrorfs_passthrough_files{mountpoint="/mnt/a \"b\""} 1`,
		`mirrorfs_requests_total{mountpoint="/mnt/a \"b\"",op="GETATTR"} 3`,
		`mirrorfs_errors_total{mountpoint="/mnt/a \"b\"",op="GETATTR",errno="ENOENT"} 1`,
		`mirrorfs_errors_total{mountpoint="/mnt/a \"b\"",op="GETATTR",errno="other"} 1`,
		`mirrorfs_request_duration_seconds_bucket{mountpoint="/mnt/a \"b\"",op="GETATTR",le="+Inf"} 3`,
		`mirrorfs_request_latency_seconds{mountpoint="/mnt/a \"b\"",op="GETATTR",quantile="0.5"} `,
		"mirrorfs_stats_time_seconds{mountpoint=\"/mnt/a \\\"b\\\"\"} 200\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %s\n%s", want, text)
		}
	}
	if n := strings.Count(text, "# TYPE mirrorfs_request_duration_seconds histogram"); n != 1 {
		t.Errorf("histogram announced %d times", n)
	}
}
