//go:build linux && cgo

package daemon

import (
	"strings"
	"testing"

	"mirrorfs/daemon/internal/stagetest"
)

// gate is the C gate's answer, from the stage built for tests.
func gate(argv []string, notifySocket string) bool { return stagetest.Gate(argv, notifySocket) }

// goGate is the Go parser's answer to the C gate's question.
func goGate(argv []string, notifySocket string) bool {
	if len(argv) == 0 || strings.HasSuffix(argv[0], ".test") || notifySocket != "" {
		return false
	}
	c, err := ParseArgs(argv[1:])
	return err == nil && c.Background()
}

var gateCases = []struct {
	argv []string
	want bool
}{
	{[]string{"mirrorfs", "src", "mnt"}, true},
	{[]string{"mirrorfs", "src", "mnt", "-o", "ro,allow_other"}, true},
	{[]string{"mirrorfs", "-oro", "--pidfile=/p", "src", "mnt"}, true},
	{[]string{"mirrorfs", "--log", "/l", "src", "--ready-timeout", "3s", "mnt"}, true},
	{[]string{"mirrorfs", "--", "src", "mnt"}, true},
	{[]string{"mirrorfs", "src", "mnt", "--takeover", "--drain-timeout", "5m"}, true},
	{[]string{"mirrorfs", "--takeover", "--allow-interruption", "--drain-timeout=1s", "src", "mnt"}, true},
	{[]string{"mirrorfs", "src", "mnt", "--takeover=yes"}, false},
	{[]string{"mirrorfs", "-f", "src", "mnt"}, false},
	{[]string{"mirrorfs", "src", "mnt", "--foreground"}, false},
	{[]string{"mirrorfs", "src", "mnt", "-d"}, false},
	{[]string{"mirrorfs", "src", "mnt", "-o", "ro,debug"}, false},
	{[]string{"mirrorfs", "src", "mnt", "-odebug"}, false},
	{[]string{"mirrorfs", "--help"}, false},
	{[]string{"mirrorfs", "src", "mnt", "-h"}, false},
	{[]string{"mirrorfs", "-V"}, false},
	{[]string{"mirrorfs", "--check-config", "x.toml"}, false},
	{[]string{"mirrorfs", "--check-config=x.toml"}, false},
	{[]string{"mirrorfs", "src", "mnt", "--config", "x.toml"}, true},
	{[]string{"mirrorfs", "src", "mnt", "-o", "config=x.toml"}, true},
	{[]string{"mirrorfs", "src"}, false},
	{[]string{"mirrorfs", "src", "mnt", "extra"}, false},
	{[]string{"mirrorfs", "--bogus", "src", "mnt"}, false},
	{[]string{"mirrorfs", "src", "mnt", "--pidfile"}, false},
	{[]string{"mirrorfs", "src", "mnt", "-o"}, false},
	{[]string{"mirrorfs", "-", "mnt"}, true},
	{[]string{"mirrorfs.test", "src", "mnt"}, false},
	{[]string{"/tmp/go-build1/b001/daemon.test", "-test.v", "-test.run=X"}, false},
}

func TestGate(t *testing.T) {
	for _, tt := range gateCases {
		if got := gate(tt.argv, ""); got != tt.want {
			t.Errorf("C gate(%q) = %v, want %v", tt.argv, got, tt.want)
		}
		if got := goGate(tt.argv, ""); got != tt.want {
			t.Errorf("Go parser: background(%q) = %v, want %v", tt.argv, got, tt.want)
		}
	}
}

func TestGateNotifySocket(t *testing.T) {
	argv := []string{"mirrorfs", "src", "mnt"}
	if gate(argv, "/run/systemd/notify") {
		t.Error("C gate detaches although NOTIFY_SOCKET is set (systemd Type=notify)")
	}
}

// FuzzGate holds the C gate to the Go parser on every command line the
// parser accepts: a disagreement would detach a foreground request, or run
// a background one in the foreground. (A line the parser rejects may go
// either way: its error reaches the terminal from either side.)
func FuzzGate(f *testing.F) {
	for _, tt := range gateCases {
		f.Add(strings.Join(tt.argv[1:], "\x00"))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		argv := append([]string{"mirrorfs"}, strings.Split(joined, "\x00")...)
		c, err := ParseArgs(argv[1:])
		if err != nil {
			return
		}
		if got := gate(argv, ""); got != c.Background() {
			t.Errorf("argv %q: C gate says detach=%v, Go parser says background=%v", argv, got, c.Background())
		}
	})
}
