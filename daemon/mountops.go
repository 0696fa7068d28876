package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/mounts"
	"mirrorfs/policy"
)

// go-fuse sizes its pool of readers of /dev/fuse from GOMAXPROCS when a
// server is made, bounded by minMaxReaders and maxMaxReaders
// (go-fuse/v2@v2.12.1/fuse/server.go, NewServer).
const (
	fuseMinReaders = 2
	fuseMaxReaders = 16
)

// procs is how the daemon sizes the Go scheduler for go-fuse's server,
// computed once from the GOMAXPROCS the process started with: go-fuse
// keeps up to readers goroutines blocked in read(2) on /dev/fuse, and each
// holds a P while it waits. When no P is left idle, sysmon takes them back
// from the blocked readers and hands them to other threads, which wake only
// to sleep again: about one futex wake-up and 1.6 context switches per
// request (perf on the tmpfs metadata cycle). So go-fuse sizes its readers
// while GOMAXPROCS is the CPU count, and the daemon then serves with room
// for every blocked reader, as many running handlers, and one more. A
// GOMAXPROCS set in the environment is left as it is (fixed is false).
type procs struct {
	readers, serving int
	fixed            bool
}

func fuseProcs(getenv func(string) string) procs {
	if getenv("GOMAXPROCS") != "" {
		n := runtime.GOMAXPROCS(0)
		return procs{readers: n, serving: n, fixed: true}
	}
	readers := min(max(fuseMinReaders, runtime.GOMAXPROCS(0)), fuseMaxReaders)
	return procs{readers: readers, serving: 2*readers + 2}
}

// around sets GOMAXPROCS for go-fuse to size its readers by, runs mount,
// and sets it for serving: the same values at every (re)mount.
func (p procs) around(mount func() error) error {
	if p.fixed {
		return mount()
	}
	runtime.GOMAXPROCS(p.readers)
	defer runtime.GOMAXPROCS(p.serving)
	return mount()
}

// mount mounts the mirror described by cfg; beneath the mount under, for
// a takeover.
func (d *daemon) mount(cfg *Config, pol *policy.Policy, log *slog.Logger, under *fs.MountID) (*fs.Mirror, error) {
	var m *fs.Mirror
	said, err := captureHelper(func() (err error) {
		return d.procs.around(func() (err error) {
			m, err = fs.Mount(cfg.Mountpoint, fs.Options{
				Source: cfg.Source, FsName: cfg.FsName, ReadOnly: cfg.ReadOnly, AllowOther: cfg.AllowOther,
				NoPassthrough: cfg.NoPassthrough, Debug: cfg.Debug, KernelFlags: cfg.KernelFlags,
				Policy: pol, Log: log, Watch: cfg.Watch, IDs: cfg.IDs, Beneath: under,
			})
			return err
		})
	})
	if err != nil {
		err = mounts.HelperError(err)
		if said != "" {
			return nil, fmt.Errorf("mount %s: %v: %s", cfg.Mountpoint, err, said)
		}
		return nil, fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	// Nothing may leak into a child (fusermount3 included): whatever a
	// library opened without O_CLOEXEC gets it now.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		log.Warn("close_range CLOEXEC", "err", err)
	}
	if under != nil {
		log.Info("mounted beneath the old mount", "mountpoint", cfg.Mountpoint, "gomaxprocs", runtime.GOMAXPROCS(0))
	} else {
		log.Info("mounted", "mountpoint", cfg.Mountpoint, "mount_id", m.Entry().ID, "gomaxprocs", runtime.GOMAXPROCS(0))
	}
	return m, nil
}

// captureHelper runs fn and returns what fusermount3 wrote meanwhile: it
// explains its failures on stderr, and that explanation belongs in the
// user's error message. go-fuse starts fusermount3 itself with the
// process's own descriptor 2 (fuse/mount_linux.go, callFusermount), so
// that is the only seam: descriptor 2 points at a pipe, drained as it
// fills, while fn runs. The daemon's own log writes to a duplicate of the
// original stderr (openLog) and loses nothing. Root mounts through the
// mount API and runs no helper: nothing is swapped then.
func captureHelper(fn func() error) (string, error) {
	if os.Geteuid() == 0 {
		return "", fn()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", fn()
	}
	saved, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		r.Close()
		w.Close()
		return "", fn()
	}
	said := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
		io.Copy(io.Discard, r) // drained to the end: a writer never blocks
		r.Close()
		said <- strings.TrimSpace(string(b))
	}()
	swapErr := unix.Dup3(int(w.Fd()), 2, 0)
	w.Close()
	ferr := fn()
	restoreErr := unix.Dup3(saved, 2, 0)
	unix.Close(saved)
	out := <-said // EOF once fd 2 is restored and the helper is gone
	if swapErr != nil || restoreErr != nil {
		return out, fmt.Errorf("%w (stderr swap: %v, restore: %v)", ferr, swapErr, restoreErr)
	}
	return out, ferr
}

// dupFile is a duplicate of f (close-on-exec) that does not follow f's
// descriptor number being pointed elsewhere.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
