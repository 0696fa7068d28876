package workload

import (
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	RunIfAsked() // this test binary as a client
	os.Exit(m.Run())
}

// On a plain folder nothing fails and the held file ends with the last
// counter written both ways.
func TestLoadOnAPlainFolder(t *testing.T) {
	dir := t.TempDir()
	l, err := Start(Config{Mnt: dir, Churn: 2, WorkDir: t.TempDir(), Pause: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a span of load, not a synchronisation
	r, err := l.Stop(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Procs) != 5 || r.Calls() == 0 || r.FailedTotal() != 0 {
		t.Errorf("%s", r.Summary())
	}
	h, _ := r.Role("holder")
	b, _ := os.ReadFile(HeldPath(dir))
	w, m, err := HeldCounter(b)
	if err != nil || w != h.Counter || m != h.Counter || h.Counter == 0 {
		t.Errorf("held file: %d, %d (%v), want %d both", w, m, err, h.Counter)
	}
	t.Log(r.Summary())
}
