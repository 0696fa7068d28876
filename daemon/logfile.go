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
	l := &logFile{path: path, stderr: stderr}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reopen switches to a fresh open of the path, which may have been renamed.
// The log is checked as the pidfile is, each time (see ownfiles.go): a
// regular file of ours, mode 0640 at most, in a folder only root and we may
// write to. A refused file leaves the log as it was.
func (l *logFile) Reopen() error {
	dir, err := openOwnDir(filepath.Dir(l.path))
	if err != nil {
		return fmt.Errorf("log %s: %w", l.path, err)
	}
	defer dir.Close()
	f, err := openOwnFile(dir, filepath.Base(l.path), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640, 0o640)
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
