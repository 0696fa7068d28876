package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHealthLogsChangesOfState drives the health check's state machine with
// a path that stops and starts answering.
func TestHealthLogsChangesOfState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mnt")
	var out syncBuffer
	h := &health{mnt: dir, log: slog.New(slog.NewTextHandler(&out, nil))}
	now := time.Now()
	step := func(want string) {
		t.Helper()
		now = now.Add(healthInterval)
		h.check(now)
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), want) || h.inFlight.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %q:\n%s", want, out.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	step("health: the mount does not answer")
	step("health: the mount does not answer") // logged once, not again
	if n := strings.Count(out.String(), "does not answer"); n != 1 {
		t.Errorf("a lasting failure was logged %d times", n)
	}
	os.Mkdir(dir, 0o755)
	step("health: the mount answers again")
	h.check(now.Add(time.Second)) // not due yet: no probe
	if h.inFlight.Load() {
		t.Error("a probe ran before the interval passed")
	}
}
