package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/policy"
)

// A takeover (--takeover) replaces the daemon serving the mountpoint with
// this one, and no client notices. This side, the new daemon:
//
//  1. finds the pidfile locked, and asks the old daemon on its control
//     socket who it is and which mount is its own ("hello");
//  2. mounts beneath that mount (fs.Options.Beneath): its session is up,
//     the old mount still on top, every lookup still served by the old;
//  3. detaches the old mount lazily, which reveals ours at once (the
//     switch: made by this daemon, it happens only while this one lives),
//     and tells the old daemon ("switched"), which drops the pidfile's
//     lock, answers, and drains (handover.go);
//  4. takes the lock, rewrites the pidfile and reports ready.
//
// Whatever fails before the switch leaves the old daemon serving as it
// did. Only root mounts through the mount API; fusermount3 cannot mount
// beneath.

// ctlTimeout bounds each answer of the old daemon: it answers on its main
// goroutine, between other work that is short.
const ctlTimeout = 10 * time.Second

// notSeamless says why this takeover cannot be seamless; with
// --allow-interruption it becomes a stop, then a start.
type notSeamless struct {
	why string
	pid int // the old daemon's, when known
}

func (e *notSeamless) Error() string {
	return e.why + "; --allow-interruption would stop the old daemon, then start"
}

// takeOver runs the takeover's steps, telling out as startSteps does.
func (d *daemon) takeOver(cfg Config, pol *policy.Policy, log *slog.Logger, stopping <-chan struct{}, out chan<- step) {
	err := d.seamless(&cfg, pol, log, stopping, out)
	var ns *notSeamless
	if errors.As(err, &ns) && cfg.AllowInterruption {
		log.Warn("no seamless takeover: stopping the old daemon, then starting", "why", ns.why)
		var p *Pidfile
		if p, err = stopOld(&cfg, ns.pid, log); err == nil {
			out <- step{pidfile: p}
			d.mountSteps(cfg, pol, log, out)
			return
		}
	}
	if err != nil {
		out <- step{err: fmt.Errorf("takeover of %s: %w", cfg.Mountpoint, err)}
	}
}

// seamless takes over without the mountpoint ever being empty; on
// success it has told out the pidfile and the mirror.
func (d *daemon) seamless(cfg *Config, pol *policy.Policy, log *slog.Logger, stopping <-chan struct{}, out chan<- step) error {
	if os.Geteuid() != 0 {
		return &notSeamless{why: "only root can mount beneath a live mount (fusermount3 cannot)", pid: lockHolder(cfg.Pidfile)}
	}
	cc, err := dialControl(cfg.Pidfile)
	if err != nil {
		return &notSeamless{why: err.Error(), pid: lockHolder(cfg.Pidfile)}
	}
	defer cc.close()
	old, err := cc.call(ctlRequest{Op: "hello", Mountpoint: cfg.Mountpoint}, ctlTimeout)
	if err != nil {
		return fmt.Errorf("the running daemon (pid %d): %w", cc.pid, err)
	}
	log.Info("taking over", "from", old.Pid, "mount_id", old.Mount.ID)
	out <- step{mounting: true}
	m, err := d.mount(cfg, pol, log, &old.Mount)
	if errors.Is(err, fs.ErrNoBeneath) {
		return &notSeamless{why: err.Error(), pid: old.Pid}
	}
	if err != nil {
		return err
	}
	select {
	case <-stopping:
		return errors.New("stopped before the switch; the old daemon serves on")
	default:
	}
	if err := m.DetachAbove(old.Mount); err != nil {
		return err
	}
	_, err = cc.call(ctlRequest{Op: "switched", DrainTimeout: cfg.DrainTimeout}, ctlTimeout)
	p, err := switched(cfg, m, old.Pid, err, log)
	if err != nil {
		return err
	}
	out <- step{pidfile: p}
	out <- step{mounted: &mounted{cfg: *cfg, policy: pol, mirror: m, predecessor: old.Pid}}
	return nil
}

// switched finishes a takeover after the switch: the old daemon was told
// (asked is its answer's error: nil, or it died, or it did not answer). Its
// lock is ours once it let go of it or died.
func switched(cfg *Config, m *fs.Mirror, oldPid int, asked error, log *slog.Logger) (*Pidfile, error) {
	p, err := acquireWithin(cfg.Pidfile, cfg.ReadyTimeout)
	if err != nil {
		if asked != nil {
			err = fmt.Errorf("the old daemon (pid %d) did not let go of the pidfile (%v): %w", oldPid, asked, err)
		}
		return nil, err
	}
	if asked != nil {
		log.Warn("the old daemon did not answer the switch; its lock is free", "pid", oldPid, "err", asked)
	}
	if err := m.Surface(); err != nil {
		p.Release()
		return nil, err
	}
	return p, nil
}

// stopOld stops the daemon holding the pidfile (SIGTERM) and takes the
// pidfile once it let go of it: a takeover that interrupts its clients.
func stopOld(cfg *Config, pid int, log *slog.Logger) (*Pidfile, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("no mirrorfs process holds %s: nothing to stop", LockPath(cfg.Pidfile))
	}
	log.Warn("stopping the old daemon", "pid", pid)
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("stopping pid %d: %w", pid, err)
	}
	p, err := acquireWithin(cfg.Pidfile, cfg.UnmountTimeout+5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("the old daemon (pid %d) did not stop: %w", pid, err)
	}
	return p, nil
}
