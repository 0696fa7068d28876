package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
)

// logFile is the daemon's log: appended to, reopened on SIGHUP (so logrotate
// needs no copytruncate), and the place a Go crash is written to.
type logFile struct {
	path   string
	stderr bool // also point fd 2 here (detached: fd 2 is /dev/null otherwise)
	mu     sync.Mutex
	f      *os.File
}

func openLogFile(path string, stderr bool) (*logFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log %s: %w", path, err)
	}
	l := &logFile{path: path, stderr: stderr}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reopen switches to a fresh open of the path, which may have been renamed.
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o640)
	if err != nil {
		return fmt.Errorf("log %s: %w", l.path, err)
	}
	if err := debug.SetCrashOutput(f, debug.CrashOptions{}); err != nil {
		f.Close()
		return fmt.Errorf("log %s: crash output: %w", l.path, err)
	}
	if l.stderr {
		// Whatever still writes to fd 2 (the runtime, fusermount3) lands here too.
		syscall.Dup3(int(f.Fd()), 2, 0)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
