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
// with counts of waiting requests, as fusectl shows them, and of requests
// answered, as the mirror counts them.
func TestHealthLogsChangesOfState(t *testing.T) {
	var out syncBuffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var h health
	answered := uint64(0)
	for range 3 * healthStuck { // a long, steady load: requests always wait, and are answered
		answered += 100
		h.observe(4, answered, log, "/mnt")
	}
	for _, n := range []int{3, 0, 2} { // nothing answered, but the queue empties between
		h.observe(n, answered, log, "/mnt")
	}
	if strings.Contains(out.String(), "health:") {
		t.Fatalf("a busy mount was reported as stuck:\n%s", out.String())
	}
	for range healthStuck + 2 { // requests wait, none is answered
		h.observe(1, answered, log, "/mnt")
	}
	if n := strings.Count(out.String(), "none is answered"); n != 1 {
		t.Errorf("a lasting failure was logged %d times, want once:\n%s", n, out.String())
	}
	h.observe(1, answered+1, log, "/mnt") // one answered: it moves again, though requests wait
	if !strings.Contains(out.String(), "answers again") {
		t.Errorf("the recovery was not logged:\n%s", out.String())
	}
}
