package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"mirrorfs/mounts"
)

// target is one way of serving a source folder: plain (the folder itself),
// mirrorfs with and without passthrough, bindfs, mergerfs.
type target struct {
	name  string
	start func(src, mnt string, id string) (pid int, err error) // nil: the plain folder
}

// mirrorfsTargets are the ways mirrorfs is run, by their options. Every
// mount is shared (allow_other), as a mirror serving other users is: the
// "another user" workload needs it, and each target pays for it alike. A
// target whose options the binary refuses is left out with its reason, the
// others measured all the same.
var mirrorfsTargets = []struct {
	name string
	opts func(work string) []string
	env  []string // added to the daemon's environment
}{
	{"mirrorfs", func(string) []string { return []string{"-o", "allow_other"} }, nil},
	{"mirrorfs nopassthrough", func(string) []string { return []string{"-o", "allow_other,nopassthrough"} }, nil},
	{"mirrorfs -o watch=off", func(string) []string { return []string{"-o", "allow_other,watch=off"} }, nil},
	// The statistics collector's cost: the same daemon without it.
	{"mirrorfs, MIRRORFS_STATS=off", func(string) []string { return []string{"-o", "allow_other"} }, []string{"MIRRORFS_STATS=off"}},
	{"mirrorfs + 100 hide patterns", func(w string) []string { return []string{"-o", "allow_other", "--config", policyFile(w)} }, nil},
}

func targets(mirrorfs, work string) []target {
	ts := []target{{name: "plain"}}
	for _, m := range mirrorfsTargets {
		ts = append(ts, target{name: m.name, start: mirrorfsStarter(mirrorfs, work, m.env, m.opts(work)...)})
	}
	ts = append(ts, target{name: "bindfs", start: helperStarter("bindfs", "allow_other")})
	if _, err := exec.LookPath("mergerfs"); err == nil {
		// minfreespace=0: mergerfs's default (4G) refuses every create on
		// the bench's small tmpfs, which measures nothing.
		ts = append(ts, target{name: "mergerfs", start: helperStarter("mergerfs", "allow_other,minfreespace=0")})
	}
	return ts
}

func mirrorfsStarter(bin, work string, env []string, extra ...string) func(src, mnt, id string) (int, error) {
	return func(src, mnt, id string) (int, error) {
		pidf := filepath.Join(work, "run", id+".pid")
		args := append([]string{src, mnt, "--pidfile", pidf, "--log", filepath.Join(work, "log", id+".log")}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("mirrorfs %v: %v: %s", args, err, out)
		}
		b, err := os.ReadFile(pidf)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
}

// policyFile writes a policy of 100 hide patterns that match nothing the
// workloads touch, half by name and half by path: the cost of the policy.
func policyFile(work string) string {
	var b strings.Builder
	b.WriteString("hide = [\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "  \"*.secret%d\",\n  \"private%d/*/key\",\n", i, i)
	}
	b.WriteString("]\n")
	path := filepath.Join(work, "policy-100.toml")
	os.MkdirAll(work, 0o755)
	os.WriteFile(path, []byte(b.String()), 0o644)
	return path
}

// helperStarter starts a FUSE daemon that detaches once mounted (libfuse).
func helperStarter(name, opts string) func(src, mnt, id string) (int, error) {
	return func(src, mnt, id string) (int, error) {
		if out, err := exec.Command(name, "-o", opts, src, mnt).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %v: %s", name, err, out)
		}
		return findProcess(name, mnt)
	}
}

// findProcess finds the process whose command line is name ... mnt.
func findProcess(name, mnt string) (int, error) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == name && args[len(args)-1] == mnt {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process for %s", name, mnt)
}

// mount is a target serving one source.
type mount struct {
	t   target
	dir string // where workloads run
	pid int    // the daemon, 0 for plain
}

func (m mount) stop() (time.Duration, error) {
	if m.pid == 0 {
		return 0, nil
	}
	began := time.Now()
	if err := syscall.Kill(m.pid, syscall.SIGTERM); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for alive(m.pid) || mountedAt(m.dir) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s (pid %d) did not stop", m.t.name, m.pid)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(began), nil
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
}

func mountedAt(dir string) bool {
	table, err := mounts.Read()
	if err != nil {
		return false
	}
	_, ok := mounts.TopAt(table, dir)
	return ok
}

// rssMiB is the resident set of pid.
func rssMiB(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

func dropCaches() {
	syscall.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}
