package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/gofrs/flock"
)

// ErrAlreadyRunning means another daemon holds the pidfile's lock.
var ErrAlreadyRunning = errors.New("already running")

// Pidfile is a pidfile held under an exclusive flock for the daemon's life.
type Pidfile struct {
	path string
	lock *flock.Flock
	once sync.Once
}

// AcquirePidfile creates (or takes over) path, locks it without blocking and
// writes this process's pid into it. A live holder gives ErrAlreadyRunning.
func AcquirePidfile(path string) (*Pidfile, error) {
	if err := makePrivateDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := checkPidfilePath(path); err != nil {
		return nil, fmt.Errorf("pidfile %s: %w", path, err)
	}
	for {
		p, retry, err := tryLock(path)
		if !retry {
			return p, err
		}
	}
}

// tryLock locks path; retry is set when the file was replaced between open
// and lock (a previous holder removing it as it exited).
func tryLock(path string) (p *Pidfile, retry bool, err error) {
	l := flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC), flock.SetPermissions(0o644))
	ok, err := l.TryLock()
	if err != nil {
		return nil, false, fmt.Errorf("pidfile %s: lock: %w", path, err)
	}
	if !ok {
		return nil, false, fmt.Errorf("%w (pid %s, pidfile %s)", ErrAlreadyRunning, readPid(path), path)
	}
	held, err1 := l.Stat()
	named, err2 := os.Lstat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, named) {
		l.Close()
		return nil, true, nil
	}
	p = &Pidfile{path: path, lock: l}
	if err := p.writePid(); err != nil {
		p.Release()
		return nil, false, err
	}
	return p, false, nil
}

func (p *Pidfile) writePid() error {
	f, err := os.OpenFile(p.path, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	defer f.Close()
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	return nil
}

// Path is where the pidfile lives.
func (p *Pidfile) Path() string { return p.path }

// Release removes the pidfile, then drops the lock (in that order, so a new
// daemon never locks a file that is about to vanish).
// It is safe to call more than once: only the first call removes the file,
// which after that could be a new daemon's.
func (p *Pidfile) Release() {
	p.once.Do(func() {
		os.Remove(p.path)
		p.lock.Close()
	})
}

// readPid returns the pid recorded in path, or "unknown".
func readPid(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		return strconv.Itoa(pid)
	}
	return "unknown"
}

// checkPidfilePath refuses a symlink, a non-regular file, or a file that
// others may write to (they could make us signal or report another process).
func checkPidfilePath(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return errors.New("is a symlink; refusing to follow it")
	case !fi.Mode().IsRegular():
		return fmt.Errorf("is not a regular file (%s)", fi.Mode().Type())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("is writable by others (mode %04o); refusing it", fi.Mode().Perm())
	case fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()):
		return fmt.Errorf("belongs to uid %d, not to us; refusing it", fi.Sys().(*syscall.Stat_t).Uid)
	}
	return nil
}

// makePrivateDir creates dir (mode 0755) if needed and refuses a folder that
// others may write to without the sticky bit.
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("folder %s is writable by others (mode %04o); refusing it", dir, fi.Mode().Perm())
	}
	return nil
}
