package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"mirrorfs/fs"
	"mirrorfs/policy"
)

// step is what the start goroutine hands to the main one, in order: the
// log once open, the pidfile once held, the news that the mount begins,
// and the end (a mirror or an error). Only one field is set.
type step struct {
	log      *opened
	pidfile  *Pidfile
	mounting bool
	mounted  *mounted
	err      error
}

type opened struct {
	log  *slog.Logger
	file *logFile
}

// mounted is what a finished start hands over.
type mounted struct {
	cfg         Config // with SOURCE and MOUNTPOINT resolved
	policy      *policy.Policy
	mirror      *fs.Mirror
	predecessor int // the daemon taken over, 0: none
}

// start runs the start's steps on a goroutine of their own (a check may
// block on a hung path, and so may the pidfile or the mount) while this,
// the main goroutine, reads the signals. A stop signal before the mount
// begins ends the start at once: there is nothing to undo but the
// pidfile, which exit releases. Once the mount has begun, a stop waits for
// it and then unmounts. A SIGHUP is kept for when the mirror is served.
func (d *daemon) start(logToFile, detached bool) error {
	steps := make(chan step) // unbuffered: the mount begins only once we know it does
	stopping := make(chan struct{})
	go d.startSteps(*d.cfg, logToFile, detached, stopping, steps)
	var stop os.Signal
	mounting := false
	for {
		select {
		case <-d.hups:
			d.hup = true
		case sig := <-d.stops:
			d.log.Info("signal", "signal", sig.String())
			if stop == nil {
				close(stopping)
			}
			if stop = sig; !mounting {
				return fmt.Errorf("stopped by %v before it was ready", sig)
			}
		case s := <-steps:
			if s.mounting {
				mounting = true
				continue
			}
			if done, err := d.take(s, stop); done {
				return err
			}
		}
	}
}

// take takes over one step of the start; done says the start is over.
func (d *daemon) take(s step, stop os.Signal) (done bool, err error) {
	switch {
	case s.log != nil:
		d.log, d.logFile = s.log.log, s.log.file
	case s.pidfile != nil:
		d.pidfile = s.pidfile
	case s.err != nil:
		return true, s.err
	case s.mounted != nil:
		*d.cfg, d.policy, d.mirror = s.mounted.cfg, s.mounted.policy, s.mounted.mirror
		d.predecessor = s.mounted.predecessor
		if stop != nil {
			d.mirror.Stop(d.cfg.UnmountTimeout)
			return true, fmt.Errorf("stopped by %v before it was ready", stop)
		}
		return true, nil
	}
	return false, nil
}

// startSteps opens the log, takes the pidfile, validates, loads the
// policy, clears a stale mount and mounts, telling out each step; or,
// with --takeover and a daemon running, takes over from it. It works on
// its own copy of the configuration and touches no field of d but the
// ones that do not change (env, procs, level, args). stopping is closed
// once a stop signal came.
func (d *daemon) startSteps(cfg Config, logToFile, detached bool, stopping <-chan struct{}, out chan<- step) {
	log, file, held, err := d.openLog(&cfg, logToFile, detached)
	if err != nil {
		out <- step{err: err}
		return
	}
	out <- step{log: &opened{log, file}}
	fail := func(err error) {
		held.release(!errors.Is(err, ErrAlreadyRunning))
		out <- step{err: err}
	}
	log.Info("starting", "version", Version, "pid", os.Getpid(), "args", d.args[1:])
	logFdLimit(log)
	// The pidfile first: a check may hang (a path on a hung file system),
	// and a start that holds the pidfile is in the log and stoppable
	// (mirrorfs-ctl stop) while it hangs.
	pidfile, err := AcquirePidfile(cfg.Pidfile)
	takeover := cfg.Takeover && errors.Is(err, ErrAlreadyRunning)
	if err != nil && !takeover {
		fail(err)
		return
	}
	held.release(true)
	if pidfile != nil {
		out <- step{pidfile: pidfile}
	}
	pol, err := cfg.checkStart()
	switch {
	case err != nil:
		out <- step{err: err}
	case takeover:
		d.takeOver(cfg, pol, log, stopping, out)
	default:
		d.mountSteps(cfg, pol, log, out)
	}
}

// checkStart checks SOURCE, MOUNTPOINT and /dev/fuse, and loads the policy.
func (cfg *Config) checkStart() (*policy.Policy, error) {
	for _, check := range []func() error{cfg.checkSource, cfg.checkMountpointPath, checkFuse} {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return loadPolicy(cfg.ConfigFile)
}

// mountSteps clears a stale mount and mounts; the pidfile is ours.
func (d *daemon) mountSteps(cfg Config, pol *policy.Policy, log *slog.Logger, out chan<- step) {
	if err := clearMountpoint(&cfg, log); err != nil {
		out <- step{err: err}
		return
	}
	out <- step{mounting: true}
	m, err := d.mount(&cfg, pol, log, nil)
	if err != nil {
		out <- step{err: err}
		return
	}
	out <- step{mounted: &mounted{cfg: cfg, policy: pol, mirror: m}}
}

func logFdLimit(log *slog.Logger) {
	if n, why := raiseFdLimit(); why != "" {
		log.Info(fmt.Sprintf("descriptors: limit %d (%s)", n, why))
	} else {
		log.Info(fmt.Sprintf("descriptors: limit %d", n))
	}
}

// openLog opens the log file, or, in the foreground without one, writes
// to a duplicate of stderr: the log never depends on what descriptor 2
// is pointed at later (the capture of fusermount3's words).
func (d *daemon) openLog(cfg *Config, toFile, detached bool) (*slog.Logger, *logFile, *heldLog, error) {
	if cfg.Debug {
		d.level.Set(slog.LevelDebug)
	}
	var w io.Writer = d.env.Stderr
	var lf *logFile
	var held *heldLog
	if toFile {
		f, err := openLogFile(cfg.Log, detached)
		if err != nil {
			return nil, nil, nil, err
		}
		lf, held = f, newHeldLog(f)
		w = held
	} else if f, ok := w.(*os.File); ok {
		if dup, err := dupFile(f); err == nil {
			w = dup
		}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: d.level})), lf, held, nil
}
