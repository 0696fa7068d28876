package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrAlreadyRunning means another daemon holds the pidfile's lock.
var ErrAlreadyRunning = errors.New("already running")

// Pidfile is a pidfile (mode 0644, so that `kill $(cat PIDFILE)` works for
// anyone) beside a lock file (NAME.lock, mode 0600) held under an exclusive
// flock for the daemon's life. The lock is not taken on the pidfile itself:
// anyone who may read a file may flock it, and would block every restart.
type Pidfile struct {
	path string
	dir  *os.File // the checked folder; every name below is relative to it
	lock *os.File
	once sync.Once
}

// LockPath is the lock file beside pidfile.
func LockPath(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".lock"
}

// AcquirePidfile locks the lock file beside path without blocking and
// writes this process's pid into path. A live holder gives
// ErrAlreadyRunning.
func AcquirePidfile(path string) (*Pidfile, error) {
	dir, err := openOwnDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("pidfile %s: %w", path, err)
	}
	if err := statOwnFile(dir, filepath.Base(path), 0o644); err != nil {
		dir.Close()
		return nil, fmt.Errorf("pidfile %s: %w", path, err)
	}
	for {
		p, retry, err := tryLock(path, dir)
		if !retry {
			if err != nil {
				dir.Close()
			}
			return p, err
		}
	}
}

// tryLock locks the lock file; retry is set when the file was replaced
// between open and lock (a previous holder removing it as it exited).
func tryLock(path string, dir *os.File) (p *Pidfile, retry bool, err error) {
	lockPath := LockPath(path)
	name := filepath.Base(lockPath)
	l, err := openOwnFile(dir, name, os.O_RDWR|os.O_CREATE, 0o600, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("lock file %s: %w", lockPath, err)
	}
	err = unix.Flock(int(l.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		l.Close()
		return nil, false, fmt.Errorf("%w (pid %s, pidfile %s)", ErrAlreadyRunning, readPid(dir, path), path)
	}
	if err != nil {
		l.Close()
		return nil, false, fmt.Errorf("lock file %s: lock: %w", lockPath, err)
	}
	var held, named unix.Stat_t
	err1 := unix.Fstat(int(l.Fd()), &held)
	err2 := unix.Fstatat(int(dir.Fd()), name, &named, unix.AT_SYMLINK_NOFOLLOW)
	if err1 != nil || err2 != nil || held.Dev != named.Dev || held.Ino != named.Ino {
		l.Close()
		return nil, true, nil
	}
	p = &Pidfile{path: path, dir: dir, lock: l}
	if err := p.writePid(); err != nil {
		p.Release()
		return nil, false, err
	}
	return p, false, nil
}

// writePid writes the pid into a fresh file and renames it over the
// pidfile, so that no reader ever sees it empty.
func (p *Pidfile) writePid() error {
	base := filepath.Base(p.path)
	tmp := "." + base + ".new"
	dirfd := int(p.dir.Fd())
	unix.Unlinkat(dirfd, tmp, 0)
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dirfd, tmp, dirfd, base)
	}
	if err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
		return fmt.Errorf("pidfile %s: %w", p.path, err)
	}
	return nil
}

// Path is where the pidfile lives.
func (p *Pidfile) Path() string { return p.path }

// Release removes the pidfile and the lock file, then drops the lock (in
// that order, so a new daemon never keeps a lock on a file that is about to
// vanish: it sees the name gone and locks afresh).
// It is safe to call more than once: only the first call removes the files,
// which after that could be a new daemon's.
func (p *Pidfile) Release() {
	p.once.Do(func() {
		dirfd := int(p.dir.Fd())
		unix.Unlinkat(dirfd, filepath.Base(p.path), 0)
		unix.Unlinkat(dirfd, filepath.Base(LockPath(p.path)), 0)
		p.lock.Close()
		p.dir.Close()
	})
}

// readPid returns the pid recorded in the pidfile, or "unknown".
func readPid(dir *os.File, path string) string {
	f, err := openOwnFile(dir, filepath.Base(path), os.O_RDONLY, 0, 0o644)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 32))
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		return strconv.Itoa(pid)
	}
	return "unknown"
}

// HandOver lets go of the lock without removing the files, which the
// daemon that takes over keeps (takeover.go): it takes the lock as soon as
// this one drops it, and rewrites the pid.
func (p *Pidfile) HandOver() {
	p.once.Do(func() {
		p.lock.Close()
		p.dir.Close()
	})
}

// Dir is the pidfile's folder, checked and open (O_PATH).
func (p *Pidfile) Dir() *os.File { return p.dir }

// acquireWithin acquires the pidfile, trying again while another daemon
// holds it, up to limit: the daemon taken over drops the lock just before
// it answers, and a start that lost a race lets go of it at once.
func acquireWithin(path string, limit time.Duration) (*Pidfile, error) {
	deadline := time.Now().Add(limit)
	for {
		p, err := AcquirePidfile(path)
		if !errors.Is(err, ErrAlreadyRunning) || time.Now().After(deadline) {
			return p, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockHolder is the pid of the mirrorfs process that holds the lock beside
// pidfile, 0 if none does. It is read from /proc/locks, which names the
// process that took a flock, not from the pidfile, which may be stale: a
// signal sent by pid must reach the daemon and nothing else.
func lockHolder(pidfile string) int {
	var st unix.Stat_t
	if unix.Stat(LockPath(pidfile), &st) != nil {
		return 0
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line) // 1: FLOCK ADVISORY WRITE PID MAJ:MIN:INO 0 EOF
		if len(f) < 6 || f[1] != "FLOCK" || f[3] != "WRITE" || f[5] != id {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			return 0
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if !strings.HasPrefix(string(comm), "mirrorfs") {
			return 0
		}
		return pid
	}
	return 0
}
