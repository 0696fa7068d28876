package workload

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Config is the load to run under Mnt.
type Config struct {
	Mnt     string
	Churn   int           // churn processes (8 if 0)
	Pause   time.Duration // between two iterations of a client (none if 0)
	Slow    time.Duration // calls at least this long are recorded with their time (1 ms if 0)
	Reopen  bool          // holder and cwd start again through Mnt when their mount is gone
	WorkDir string        // where the clients write their reports (a private folder of the caller)
}

// Load is the running clients.
type Load struct {
	cfg   Config
	procs []*proc // in the order they stop: lockprobe, churn, cwd, holder
}

type proc struct {
	spec
	cmd  *exec.Cmd
	done chan struct{}
}

// startLimit bounds how long a client may take to set up.
const startLimit = 20 * time.Second

// Start runs the clients: the holder first (the lock probe needs its
// file), then the others; it returns once each said it is looping.
func Start(cfg Config) (*Load, error) {
	if cfg.Churn == 0 {
		cfg.Churn = 8
	}
	if cfg.Slow == 0 {
		cfg.Slow = time.Millisecond
	}
	l := &Load{cfg: cfg}
	roles := []spec{{Role: "holder"}, {Role: "lockprobe"}, {Role: "cwd"}}
	for i := 0; i < cfg.Churn; i++ {
		roles = append(roles, spec{Role: "churn", ID: i})
	}
	for _, s := range roles {
		if err := l.start(s); err != nil {
			l.Kill()
			return nil, err
		}
	}
	return l, nil
}

func (l *Load) start(s spec) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s.Mnt, s.Pause, s.Slow, s.Reopen = l.cfg.Mnt, l.cfg.Pause, l.cfg.Slow, l.cfg.Reopen
	s.Report = filepath.Join(l.cfg.WorkDir, fmt.Sprintf("%s%d.json", s.Role, s.ID))
	raw, _ := json.Marshal(s)
	p := &proc{spec: s, cmd: exec.Command(self), done: make(chan struct{})}
	p.cmd.Dir = "/"
	p.cmd.Env = append(os.Environ(), roleEnv+"="+string(raw))
	p.cmd.Stderr = os.Stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := p.cmd.Start(); err != nil {
		return err
	}
	l.add(p)
	readyc := make(chan bool, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		readyc <- err == nil && line == "ready\n"
	}()
	go func() { p.cmd.Wait(); close(p.done) }()
	select {
	case ok := <-readyc:
		if ok {
			return nil
		}
		<-p.done
		return fmt.Errorf("workload %s %d: exited before it was ready (%v)", s.Role, s.ID, p.cmd.ProcessState)
	case <-time.After(startLimit):
		return fmt.Errorf("workload %s %d: not ready within %v", s.Role, s.ID, startLimit)
	}
}

// add keeps p in stop order: the lock probe first, the holder last.
func (l *Load) add(p *proc) {
	rank := map[string]int{"lockprobe": 0, "churn": 1, "cwd": 2, "holder": 3}
	i := len(l.procs)
	for i > 0 && rank[l.procs[i-1].Role] > rank[p.Role] {
		i--
	}
	l.procs = append(l.procs[:i], append([]*proc{p}, l.procs[i:]...)...)
}

// Pids are the client processes, by role.
func (l *Load) Pids() map[string][]int {
	m := map[string][]int{}
	for _, p := range l.procs {
		m[p.Role] = append(m[p.Role], p.cmd.Process.Pid)
	}
	return m
}

// Stop tells each client to finish (SIGTERM; the lock probe first, the
// holder last, each waited for within limit) and gathers their reports.
// A client that does not end in time is killed, and is an error.
func (l *Load) Stop(limit time.Duration) (Report, error) {
	var r Report
	var errs []error
	for _, p := range l.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(limit):
			p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("workload %s %d (pid %d): did not end within %v of SIGTERM", p.Role, p.ID, p.cmd.Process.Pid, limit))
			continue
		}
		if !p.cmd.ProcessState.Success() {
			errs = append(errs, fmt.Errorf("workload %s %d: %v", p.Role, p.ID, p.cmd.ProcessState))
		}
		var got Proc
		b, err := os.ReadFile(p.Report)
		if err == nil {
			err = json.Unmarshal(b, &got)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("workload %s %d: report: %w", p.Role, p.ID, err))
			continue
		}
		r.Procs = append(r.Procs, got)
	}
	l.procs = nil
	return r, errors.Join(errs...)
}

// Kill ends every client still running at once, for a cleanup.
func (l *Load) Kill() {
	for _, p := range l.procs {
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(startLimit):
		}
	}
	l.procs = nil
}
