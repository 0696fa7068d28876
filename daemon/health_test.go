package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
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

// TestHealthLogsChangesOfState drives the health check's state machine
// with counts of waiting requests, as fusectl shows them.
func TestHealthLogsChangesOfState(t *testing.T) {
	var out syncBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var h health
	for _, n := range []int{3, 0, 2, 2} { // busy, but requests end
		h.observe(n, log, "/mnt")
	}
	if strings.Contains(out.String(), "none ends") {
		t.Fatalf("a busy mount was reported as stuck:\n%s", out.String())
	}
	for range healthStuck + 2 {
		h.observe(1, log, "/mnt")
	}
	if n := strings.Count(out.String(), "none ends"); n != 1 {
		t.Errorf("a lasting failure was logged %d times, want once:\n%s", n, out.String())
	}
	h.observe(0, log, "/mnt")
	if !strings.Contains(out.String(), "answers again") {
		t.Errorf("the recovery was not logged:\n%s", out.String())
	}
}
