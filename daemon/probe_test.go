package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withProbeExe runs the probe through script (sh), which ends by running
// this test binary as the probe child ("$TESTBIN").
func withProbeExe(t *testing.T, script string) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "probe.sh")
	body := "#!/bin/sh\nTESTBIN='" + bin + "'\n" + script + "\n"
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	old := probeExe
	probeExe = path
	t.Cleanup(func() { probeExe = old })
}

func TestProbeAnswers(t *testing.T) {
	dir := t.TempDir()
	if err := probeInChild(dir, -1, probeTimeout); err != nil {
		t.Errorf("probe of the folder %s: %v, want nil", dir, err)
	}
	if err := probeInChild(filepath.Join(dir, "missing"), -1, probeTimeout); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("probe of a missing path: %v, want ENOENT", err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := probeInChild("unused", fd, probeTimeout); err != nil {
		t.Errorf("probe of the descriptor of %s: %v, want nil", dir, err)
	}
}

// A child slow to start (a loaded machine) is not a mount that does not
// answer: the timeout runs from "armed".
func TestProbeTimeoutRunsFromArmed(t *testing.T) {
	withProbeExe(t, `sleep 3; exec "$TESTBIN"`)
	if err := probeInChild(t.TempDir(), -1, probeTimeout); err != nil {
		t.Errorf("probe through a child that took 3s to start, timeout %v: %v, want nil", probeTimeout, err)
	}
}

// A child armed and silent is a mount that does not answer; the probe
// returns without waiting for the child's end.
func TestProbeArmedAndSilent(t *testing.T) {
	withProbeExe(t, `echo armed; exec sleep 60`)
	done := make(chan error, 1)
	go func() { done <- probeInChild(t.TempDir(), -1, 100*time.Millisecond) }()
	select {
	case err := <-done:
		if !errors.Is(err, errNoAnswer) {
			t.Errorf("probe through a silent child: %v, want %v", err, errNoAnswer)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the probe of a silent child did not return within 30s")
	}
}

func TestProbeChildEndsEarly(t *testing.T) {
	withProbeExe(t, `echo armed`)
	if err := probeInChild(t.TempDir(), -1, probeTimeout); err == nil || errors.Is(err, errNoAnswer) {
		t.Errorf("probe through a child that ended without an answer: %v, want an error saying so", err)
	}
}
