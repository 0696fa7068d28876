package daemon

import (
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/policy"
)

// checkConfig is --check-config: validate a policy file, never mount.
func checkConfig(name string) int {
	p, err := policy.Load(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mirrorfs: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintf(os.Stdout, "mirrorfs: %s: ok (%s)\n", name, describe(p))
	return ExitOK
}

// Version is set at build time.
var Version = "dev"

//go:embed usage.txt
var usage string

// Main runs mirrorfs with os.Args-style arguments and returns the exit code.
func Main(args []string) int {
	st := readStage()
	rep := newReporter(st)
	cfg, err := ParseArgs(args[1:])
	if err != nil {
		return rep.fail(err)
	}
	switch {
	case cfg.Help:
		fmt.Fprint(os.Stdout, usage)
		return ExitOK
	case cfg.Version:
		fmt.Fprintf(os.Stdout, "mirrorfs %s\n", Version)
		return ExitOK
	case cfg.CheckConfig != "":
		return checkConfig(cfg.CheckConfig)
	case cfg.Background() && !st.ran && os.Getenv("NOTIFY_SOCKET") == "":
		return rep.fail(errNoStage)
	}
	dir, err := st.workdir()
	if err != nil {
		return rep.fail(fmt.Errorf("current directory: %w", err))
	}
	logToFile := st.ran || cfg.Log != "" // before resolve fills in the default
	if err := cfg.resolve(dir, os.Getenv); err != nil {
		return rep.fail(err)
	}
	rep.start(cfg.ReadyTimeout, cfg.Log)
	d, err := start(cfg, logToFile, st.ran, rep)
	if err != nil {
		return rep.fail(err)
	}
	d.serve()
	return ExitOK
}

// daemon is a running mirror and what it holds.
type daemon struct {
	cfg     *Config
	log     *slog.Logger
	logFile *logFile // nil when logging to stderr
	pidfile *Pidfile
	mirror  *fs.Mirror
	mounted Mount          // our mount, as the mount table shows it
	stops   chan os.Signal // SIGINT, SIGTERM, SIGQUIT: a full channel already means stop
	hups    chan os.Signal // SIGHUP: a storm of them coalesces into one pending reload
	policy  *policy.Policy // the policy in force; only the serving goroutine changes it
	level   slog.LevelVar
	state   State

	mu         sync.Mutex // guards log (while set), pidfile, mounting, stopSig, hupPending during the start
	mounting   bool       // the mount has begun: a stop waits for it to finish
	stopSig    os.Signal  // a stop signal that arrived while mounting
	hupPending bool       // a SIGHUP that arrived during the start
}

// start takes the daemon from a parsed command line to a live mount.
func start(cfg *Config, logToFile, detached bool, rep *reporter) (*daemon, error) {
	unix.Umask(0) // modes in the mirror are the callers'; ours are explicit
	// Notify drops a signal when its channel is full: on a shared channel a
	// storm of SIGHUPs could crowd out the SIGTERM that follows.
	d := &daemon{cfg: cfg, stops: make(chan os.Signal, 1), hups: make(chan os.Signal, 1)}
	signal.Notify(d.stops, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	signal.Notify(d.hups, syscall.SIGHUP)
	mountBegins := make(chan struct{})
	var once sync.Once
	endEarlyStops := func() { once.Do(func() { close(mountBegins) }) }
	defer endEarlyStops()
	go d.stopEarly(rep, mountBegins)
	if err := d.prepare(logToFile, detached); err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.mounting = true
	d.mu.Unlock()
	endEarlyStops()
	if err := d.mount(); err != nil {
		d.close("mount failed", err)
		return nil, err
	}
	if sig, stop := d.stoppedDuringStart(); stop {
		d.unmount()
		err := fmt.Errorf("stopped by %v before it was ready", sig)
		d.close("stopped", err)
		return nil, err
	}
	msg := fmt.Sprintf("mirrorfs: mounted %s at %s (pid %d, log %s, passthrough %s)",
		cfg.Source, cfg.Mountpoint, os.Getpid(), d.logName(), d.mirror.Passthrough())
	d.setLogLevel(d.policy)
	d.startProfile()
	d.state = State{Pid: os.Getpid(), Source: cfg.Source, Mountpoint: cfg.Mountpoint, Config: cfg.ConfigFile, Started: time.Now().UTC()}
	d.writeState()
	d.log.Info("ready", "source", cfg.Source, "mountpoint", cfg.Mountpoint, "passthrough", d.mirror.Passthrough(),
		"watch", d.mirror.Watch(), "policy", describe(d.policy))
	rep.ready(msg)
	sd.SdNotify(false, sd.SdNotifyReady)
	return d, nil
}

// prepare validates, opens the log, takes the pidfile and clears a stale mount.
func (d *daemon) prepare(logToFile, detached bool) error {
	cfg := d.cfg
	if err := d.openLog(logToFile, detached); err != nil {
		return err
	}
	d.log.Info("starting", "version", Version, "pid", os.Getpid(), "args", os.Args[1:])
	if n, why := raiseFdLimit(); why != "" {
		d.log.Info(fmt.Sprintf("descriptors: limit %d (%s)", n, why))
	} else {
		d.log.Info(fmt.Sprintf("descriptors: limit %d", n))
	}
	for _, check := range []func() error{cfg.checkSource, cfg.checkMountpointPath, checkFuse, d.loadPolicy} {
		if err := check(); err != nil {
			d.log.Error("refused", "err", err)
			return err
		}
	}
	pidfile, err := AcquirePidfile(cfg.Pidfile)
	if err != nil {
		d.log.Error("refused", "err", err)
		return err
	}
	d.mu.Lock()
	d.pidfile = pidfile
	d.mu.Unlock()
	if err := d.clearMountpoint(); err != nil {
		d.close("refused", err)
		return err
	}
	return nil
}

func (d *daemon) openLog(toFile, detached bool) error {
	if d.cfg.Debug {
		d.level.Set(slog.LevelDebug)
	}
	var w io.Writer = os.Stderr
	if toFile {
		lf, err := openLogFile(d.cfg.Log, detached)
		if err != nil {
			return err
		}
		d.logFile, w = lf, lf
	}
	logger := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: &d.level}))
	d.mu.Lock() // stopEarly may log from its goroutine
	d.log = logger
	d.mu.Unlock()
	return nil
}

func (d *daemon) logName() string {
	if d.logFile == nil {
		return "stderr"
	}
	return d.logFile.path
}

// sizeForFuse sizes the Go scheduler for go-fuse's server, to be started
// between this call and the one to what it returns. go-fuse keeps up to
// GOMAXPROCS+1 goroutines blocked in read(2) on /dev/fuse, and each holds a
// P while it waits. When no P is left idle, sysmon takes them back from the
// blocked readers and hands them to other threads, which wake only to sleep
// again: about one futex wake-up and 1.6 context switches per request (perf
// on the tmpfs metadata cycle). So go-fuse sizes its readers while
// GOMAXPROCS is the CPU count, and the daemon then runs with room for every
// blocked reader, as many running handlers, and one more: a reader's P is
// then never needed elsewhere. A GOMAXPROCS set in the environment is left
// as it is.
func sizeForFuse() (started func()) {
	if os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	readers := min(max(2, runtime.GOMAXPROCS(0)), 16) // go-fuse's own bounds
	runtime.GOMAXPROCS(readers)
	return func() { runtime.GOMAXPROCS(2*readers + 2) }
}

// mount mounts the mirror and notes the mount's id for the watcher.
func (d *daemon) mount() error {
	cfg := d.cfg
	var m *fs.Mirror
	said, err := captureStderr(func() (err error) {
		defer sizeForFuse()()
		m, err = fs.Mount(cfg.Mountpoint, fs.Options{
			Source: cfg.Source, FsName: cfg.FsName, ReadOnly: cfg.ReadOnly, AllowOther: cfg.AllowOther,
			NoPassthrough: cfg.NoPassthrough, Debug: cfg.Debug, KernelFlags: cfg.KernelFlags,
			Policy: d.policy, Log: d.log, Watch: cfg.Watch,
		})
		return err
	})
	if err != nil {
		if said != "" {
			return fmt.Errorf("mount %s: %v: %s", cfg.Mountpoint, err, said)
		}
		return fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	d.mirror = m
	// Nothing may leak into a child (fusermount3 included): whatever a
	// library opened without O_CLOEXEC gets it now.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		d.log.Warn("close_range CLOEXEC", "err", err)
	}
	mounts, err := readMounts()
	if err != nil {
		d.unmount()
		return fmt.Errorf("mountinfo: %w", err)
	}
	top, ok := topMountAt(mounts, cfg.Mountpoint)
	if !ok || top.FSType != FSType {
		d.unmount()
		return fmt.Errorf("mount %s: not in /proc/self/mountinfo after mounting", cfg.Mountpoint)
	}
	if id := m.MountID(); id != 0 && top.ID != id {
		d.unmount()
		return fmt.Errorf("mount %s: another mount (id %d) is on top of ours (id %d)", cfg.Mountpoint, top.ID, id)
	}
	d.mounted = top
	d.log.Info("mounted", "mountpoint", cfg.Mountpoint, "mount_id", top.ID)
	return nil
}

// startProfile writes a CPU profile of the daemon's life to the file named
// by MIRRORFS_CPUPROFILE (for finding where the time goes under load).
func (d *daemon) startProfile() {
	path := os.Getenv("MIRRORFS_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		d.log.Error("cpu profile", "err", err)
	}
}

// stopEarly ends the process at once on a stop signal that comes before the
// mount begins: a start stuck on a hung path must not outlive its caller.
// There is nothing to undo yet but the pidfile.
func (d *daemon) stopEarly(rep *reporter, mountBegins <-chan struct{}) {
	for {
		select {
		case <-mountBegins:
			return
		case <-d.hups:
			d.mu.Lock()
			d.hupPending = true // served once the mount is up
			d.mu.Unlock()
		case sig := <-d.stops:
			d.mu.Lock()
			if d.mounting {
				d.stopSig = sig
				d.mu.Unlock()
				return
			}
			if d.pidfile != nil {
				d.pidfile.Release()
			}
			err := fmt.Errorf("stopped by %v before it was ready", sig)
			if d.log != nil {
				d.log.Error("exit", "err", err)
			}
			os.Exit(rep.fail(err))
		}
	}
}

// stoppedDuringStart reports a stop signal that arrived while mounting.
func (d *daemon) stoppedDuringStart() (os.Signal, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopSig != nil {
		return d.stopSig, true
	}
	select {
	case <-d.hups:
		d.hupPending = true
	default:
	}
	select {
	case sig := <-d.stops:
		return sig, true
	default:
		return nil, false
	}
}

// close releases what the daemon holds and logs why it ends.
func (d *daemon) close(why string, err error) {
	if d.pidfile != nil {
		os.Remove(StatePath(d.pidfile.Path()))
		d.pidfile.Release()
	}
	if err != nil {
		d.log.Error(why, "err", err)
	}
	pprof.StopCPUProfile()
	d.log.Info("exit", "pid", os.Getpid())
	sd.SdNotify(false, sd.SdNotifyStopping)
	if d.logFile != nil {
		d.logFile.Close()
	}
}
