package daemon

import (
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/policy"
)

// Env is what Main uses of its process besides the arguments: where it
// writes, and how it reads the environment.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// OSEnv is the process's own.
func OSEnv() Env { return Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv} }

//go:embed usage.txt
var usageText string

// usage is the --help text, with the defaults this package defines.
func usage() string {
	return strings.NewReplacer(
		"{{ready}}", DefaultReadyTimeout.String(),
		"{{unmount}}", DefaultUnmountTimeout.String(),
		"{{drain}}", DefaultDrainTimeout.String(),
	).Replace(usageText)
}

// Main runs mirrorfs with os.Args-style arguments and returns the exit code.
func Main(args []string, env Env) int {
	if fd := env.Getenv(probeEnv); fd != "" {
		return probeChild(fd, env)
	}
	st := readStage()
	rep := newReporter(st, env)
	cfg, err := ParseArgs(args[1:])
	if err != nil {
		return rep.fail(err)
	}
	switch {
	case cfg.Help:
		fmt.Fprint(env.Stdout, usage())
		return ExitOK
	case cfg.Version:
		fmt.Fprint(env.Stdout, versionText())
		return ExitOK
	case cfg.Man:
		fmt.Fprint(env.Stdout, manPage(usage(), shortVersion()))
		return ExitOK
	case cfg.DetachDead != "":
		return detachDead(cfg.DetachDead, env)
	case cfg.CheckConfig != "":
		return checkConfig(cfg.CheckConfig, env)
	case cfg.Background() && !st.ran && env.Getenv("NOTIFY_SOCKET") == "":
		return rep.fail(errNoStage)
	}
	dir, err := st.workdir()
	if err != nil {
		return rep.fail(fmt.Errorf("current directory: %w", err))
	}
	logToFile := st.ran || cfg.Log != "" // before resolve fills in the default
	if err := cfg.resolve(dir, env.Getenv); err != nil {
		return rep.fail(err)
	}
	rep.start(cfg.ReadyTimeout, cfg.Log)
	d := newDaemon(cfg, env, args)
	return d.run(logToFile, st.ran, rep)
}

// checkConfig is --check-config: validate a policy file, never mount.
func checkConfig(name string, env Env) int {
	p, err := policy.Load(name)
	if err != nil {
		fmt.Fprintf(env.Stderr, "mirrorfs: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintf(env.Stdout, "mirrorfs: %s: ok (%s)\n", name, describe(p))
	return ExitOK
}

// daemon is a running mirror and what it holds. Its fields belong to the
// main goroutine: the start's steps that may block run on another one,
// which hands over what it opened (start.go).
type daemon struct {
	cfg     *Config
	env     Env
	args    []string
	procs   procs
	log     *slog.Logger
	logFile *logFile // nil when logging to stderr
	pidfile *Pidfile
	mirror  *fs.Mirror
	stops   chan os.Signal // SIGINT, SIGTERM, SIGQUIT
	hups    chan os.Signal // SIGHUP: a storm of them coalesces into one pending reload
	hup     bool           // a SIGHUP came while the mirror was not being served
	policy  *policy.Policy // the policy in force
	level   *slog.LevelVar
	state   State
	health  health
	stats   *statsWriter // publishes the statistics (stats.go)

	// A takeover (takeover.go, handover.go).
	ctl          *controlSocket // nil: none (a user's daemon, or none yet)
	calls        chan ctlCall   // requests on the control socket
	taker        uint64         // the caller a takeover is under way with, 0: none
	takerPid     int            // its pid
	takerSince   time.Time      // when it asked
	predecessor  int            // the daemon this one took over from, 0: none
	successor    int            // the daemon this one handed over to, 0: none
	drainTimeout time.Duration
	drainRec     *drainRecord
}

func newDaemon(cfg *Config, env Env, args []string) *daemon {
	level := new(slog.LevelVar)
	if cfg.LogLevel != nil {
		level.Set(*cfg.LogLevel) // from the start on, not only once the policy is in force
	}
	return &daemon{
		cfg: cfg, env: env, args: args, procs: fuseProcs(env.Getenv), level: level,
		// Until the log is open, what there is to say goes to stderr.
		log: slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level})),
		// Notify drops a signal when its channel is full: on a shared
		// channel a storm of SIGHUPs could crowd out the SIGTERM after it.
		stops: make(chan os.Signal, 1), hups: make(chan os.Signal, 1),
		calls: make(chan ctlCall),
	}
}

// run is the daemon's life, on the main goroutine, which alone reads the
// signals and decides the exit: the start, then serving, then one exit.
func (d *daemon) run(logToFile, detached bool, rep *reporter) int {
	unix.Umask(0) // modes in the mirror are the callers'; ours are explicit
	signal.Notify(d.stops, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	signal.Notify(d.hups, syscall.SIGHUP)
	if err := d.start(logToFile, detached); err != nil {
		code := rep.fail(err)
		d.exit("start failed", err)
		return code
	}
	d.ready(rep)
	err := d.serve()
	if d.successor != 0 {
		d.drain()
	}
	d.exit("stopped", err)
	return exitCode(err)
}

// ready tells the waiting process, systemd and the log that the mirror
// is served.
func (d *daemon) ready(rep *reporter) {
	cfg := d.cfg
	d.setLogLevel(d.policy)
	d.startProfile()
	d.state = State{Pid: os.Getpid(), Source: cfg.Source, Mountpoint: cfg.Mountpoint, Config: cfg.ConfigFile, Started: time.Now().UTC()}
	d.writeState()
	d.listenControl()
	sweepDrainRecords(d.pidfile)
	// Both kinds of read-only: the kernel mount's (-o ro) and the policy's
	// read_only; either refuses writes, and a line naming one alone misleads.
	d.log.Info("ready", "source", cfg.Source, "mountpoint", cfg.Mountpoint, "passthrough", d.mirror.Passthrough(),
		"watch", d.mirror.Watch(), "mount", mountMode(cfg), "policy", describe(d.policy))
	what := "mounted"
	if d.predecessor != 0 {
		what = "took over"
		d.log.Info("took over", "from", d.predecessor)
	}
	rep.ready(fmt.Sprintf("mirrorfs: %s %s at %s%s (pid %d, log %s, mount %s, policy read_only=%v, passthrough %s)",
		what, cfg.Source, cfg.Mountpoint, d.fromWhom(), os.Getpid(), d.logName(), mountMode(cfg), d.policy.ReadOnly, d.mirror.Passthrough()))
	sd.SdNotify(false, sd.SdNotifyReady)
}

// exit is the one way out: it releases what the daemon holds and logs why
// it ends. The mount is already ended (or was never made).
func (d *daemon) exit(why string, err error) {
	sd.SdNotify(false, sd.SdNotifyStopping)
	d.stats.close()
	d.ctl.close(true)
	d.drainRec.remove()
	// A daemon that handed over leaves the files to its successor.
	if d.pidfile != nil && d.successor == 0 {
		os.Remove(StatePath(d.pidfile.Path()))
		d.pidfile.Release()
	}
	if err != nil {
		d.log.Error(why, "err", err)
	}
	pprof.StopCPUProfile()
	d.log.Info("exit", "pid", os.Getpid(), "code", exitCode(err))
	if d.logFile != nil {
		d.logFile.Close()
	}
}

// mountMode is the kernel mount's mode: "ro" for -o ro, else "rw".
func mountMode(cfg *Config) string {
	if cfg.ReadOnly {
		return "ro"
	}
	return "rw"
}

// fromWhom is " from pid N" after a takeover.
func (d *daemon) fromWhom() string {
	if d.predecessor == 0 {
		return ""
	}
	return fmt.Sprintf(" from pid %d", d.predecessor)
}

// listenControl opens the control socket a takeover asks on; only root
// takes over (takeover.go).
func (d *daemon) listenControl() {
	if os.Geteuid() != 0 {
		return
	}
	ctl, err := listenControl(d.pidfile.Dir(), d.cfg.Pidfile, d.calls, d.log)
	if err != nil {
		d.log.Warn("no takeover possible", "err", err)
		return
	}
	d.ctl = ctl
}

func (d *daemon) logName() string {
	if d.logFile == nil {
		return "stderr"
	}
	return d.logFile.path
}

// startProfile writes a CPU profile of the daemon's life to the file named
// by MIRRORFS_CPUPROFILE (for finding where the time goes under load).
func (d *daemon) startProfile() {
	path := d.env.Getenv("MIRRORFS_CPUPROFILE")
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
