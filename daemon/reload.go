package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// loadPolicy reads the policy file, or gives the default policy without one.
func loadPolicy(name string) (*policy.Policy, error) {
	if name == "" {
		return policy.Default, nil
	}
	return policy.Load(name)
}

// setLogLevel follows the policy's log_level; -o debug overrides it, and
// so does --log-level, at every reload too: a reload made to change what
// the mirror hides must not undo the level the operator started it with.
func (d *daemon) setLogLevel(p *policy.Policy) {
	if d.cfg.Debug {
		d.level.Set(slog.LevelDebug)
		return
	}
	if d.cfg.LogLevel != nil {
		d.level.Set(*d.cfg.LogLevel)
		return
	}
	d.level.Set(p.LogLevel)
}

// reload handles SIGHUP: reopen the log (so logrotate needs no
// copytruncate), then re-read the policy file. A broken file leaves the
// policy in force as it was.
func (d *daemon) reload() {
	d.log.Info("signal", "signal", "hangup")
	notifyReloading()
	defer sd.SdNotify(false, sd.SdNotifyReady)
	d.reopenLog()
	if d.cfg.ConfigFile == "" {
		d.recordReload(nil, "no policy file (--config) to reload")
		return
	}
	p, err := policy.Load(d.cfg.ConfigFile)
	if err != nil {
		d.log.Error("reload failed; the policy in force stays", "err", err)
		d.recordReload(err, "")
		return
	}
	d.mirror.SetPolicy(p)
	d.policy = p
	d.setLogLevel(p)
	msg := describe(p)
	d.log.Info("reloaded", "config", d.cfg.ConfigFile, "policy", msg)
	d.recordReload(nil, msg)
}

// reopenLog reopens the log file, so that logrotate needs no copytruncate.
func (d *daemon) reopenLog() {
	if d.logFile == nil {
		return
	}
	if err := d.logFile.Reopen(); err != nil {
		d.log.Error("reopen log", "err", err)
	} else {
		d.log.Info("log reopened", "path", d.logFile.path)
	}
}

// notifyReloading tells systemd a reload began, with the monotonic time it
// needs to match the reload to the request (sd_notify(3)).
func notifyReloading() {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	sd.SdNotify(false, fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sd.SdNotifyReloading, ts.Nano()/1000))
}

// describeBound bounds the patterns describe lists: a policy may hold
// 100,000 of them, and each reload writes the summary into the log and the
// state file.
const describeBound = 200

// describe summarises a policy for the log and the state file: every hide
// pattern when they are few, else their number and the first ones.
func describe(p *policy.Policy) string {
	var b strings.Builder
	for i, h := range p.Hide {
		s := h.String()
		if b.Len()+len(s)+1 > describeBound {
			return fmt.Sprintf("read_only=%v hide=%d patterns (first: %s …)", p.ReadOnly, len(p.Hide), b.String())
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	return fmt.Sprintf("read_only=%v hide=[%s]", p.ReadOnly, b.String())
}

// State is what the daemon publishes beside its pidfile for operators and
// `mirrorfs-ctl status`, who read it without talking to the daemon.
type State struct {
	Pid         int       `json:"pid"`
	Source      string    `json:"source"`
	Mountpoint  string    `json:"mountpoint"`
	Config      string    `json:"config,omitempty"`
	Policy      string    `json:"policy"`
	Passthrough string    `json:"passthrough"`
	Started     time.Time `json:"started"`
	LastReload  *Reload   `json:"last_reload,omitempty"`
}

// Reload is the outcome of the last SIGHUP.
type Reload struct {
	Time    time.Time `json:"time"`
	OK      bool      `json:"ok"`
	Message string    `json:"message"`
}

// StatePath is where the state of the daemon holding pidfile is kept.
func StatePath(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".state"
}

func (d *daemon) recordReload(err error, msg string) {
	r := &Reload{Time: time.Now().UTC(), OK: err == nil, Message: msg}
	if err != nil {
		r.Message = err.Error()
	}
	d.state.LastReload = r
	d.writeState()
}

// writeState replaces the state file atomically (write, then rename).
func (d *daemon) writeState() {
	d.state.Policy = describe(d.policy)
	d.state.Passthrough = d.mirror.Passthrough()
	d.publishStats()
	path := StatePath(d.cfg.Pidfile)
	if err := writeFileAtomic(path, d.state); err != nil {
		d.log.Error("state file", "path", path, "err", err)
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
