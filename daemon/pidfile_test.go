package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPidfileLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "x.pid")
	p, err := AcquirePidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != fmt.Sprintf("%d\n", os.Getpid()) {
		t.Fatalf("pidfile holds %q (%v), want our pid and a newline", b, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("pidfile mode %04o, want 0644", fi.Mode().Perm())
	}
	dir, _ := os.Stat(filepath.Dir(path))
	if dir.Mode().Perm() != 0o755 {
		t.Errorf("runtime folder mode %04o, want 0755", dir.Mode().Perm())
	}

	_, err = AcquirePidfile(path)
	if !errors.Is(err, ErrAlreadyRunning) || exitCode(err) != ExitAlreadyRunning {
		t.Fatalf("second acquire: %v, want ErrAlreadyRunning", err)
	}
	if want := fmt.Sprintf("already running (pid %d,", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("second acquire: %q does not say %q", err, want)
	}

	p.Release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pidfile still there after Release: %v", err)
	}
	p2, err := AcquirePidfile(path)
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	p2.Release()
}

func TestPidfileTakesOverDeadDaemonsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pid")
	if err := os.WriteFile(path, []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := AcquirePidfile(path)
	if err != nil {
		t.Fatalf("a stale, unlocked pidfile was not taken over: %v", err)
	}
	defer p.Release()
	dir, _ := openOwnDir(filepath.Dir(path))
	defer dir.Close()
	if got := readPid(dir, path); got != fmt.Sprint(os.Getpid()) {
		t.Errorf("pidfile holds %s after take-over", got)
	}
}

func TestPidfileRefusals(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link.pid")
	os.Symlink(filepath.Join(dir, "target"), link)
	open := filepath.Join(dir, "open.pid")
	os.WriteFile(open, nil, 0o644)
	os.Chmod(open, 0o666)
	shared := filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	foreign := filepath.Join(dir, "foreign.pid")
	os.WriteFile(foreign, nil, 0o644)
	os.Chown(foreign, 65534, 65534)
	for path, want := range map[string]string{
		foreign:                        "belongs to uid 65534, not to us",
		link:                           "is a symlink",
		open:                           "is writable by others (mode 0666)",
		filepath.Join(shared, "x.pid"): "writable by others (mode 0777)",
		filepath.Join(dir):             "is not a regular file",
	} {
		_, err := AcquirePidfile(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("AcquirePidfile(%s) = %v, want an error naming it and saying %q", path, err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); !os.IsNotExist(err) {
		t.Error("the symlink's target was created")
	}
}
