package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/daemon"
)

// The daemon's own files and inputs under a hostile local user: the policy
// file, the log, the pidfile and its lock, the signals.

// modes are the two ways the mirror serves files.
var modes = map[string][]string{"passthrough": nil, "nopassthrough": {"-o", "nopassthrough"}}

// hup sends SIGHUP and returns the reload the daemon then records.
func (e *env) hup() daemon.Reload {
	e.t.Helper()
	var before time.Time
	if r := e.state().LastReload; r != nil {
		before = r.Time
	}
	syscall.Kill(e.pid(), syscall.SIGHUP)
	var got daemon.Reload
	eventually(e.t, "the reload to be recorded", func() bool {
		r := e.state().LastReload
		if r != nil && r.Time.After(before) {
			got = *r
			return true
		}
		return false
	})
	return got
}

// TestEmptyPolicyNeverOpensTheMirror: a policy file caught empty (an
// editor's save truncates, then writes) or left with comments only is
// refused on reload; read_only and the hides stay in force.
func TestEmptyPolicyNeverOpensTheMirror(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			os.WriteFile(filepath.Join(e.src, "secret"), []byte("s"), 0o644)
			policy := e.writePolicy("read_only = true\nhide = ['secret']\n")
			e.start(append([]string{"--config", policy}, opts...)...)
			for _, text := range []string{"", "# all commented out\n\n"} {
				if err := os.WriteFile(policy, []byte(text), 0o644); err != nil { // in place, as an editor saves
					t.Fatal(err)
				}
				r := e.hup()
				if r.OK || !strings.Contains(r.Message, "has no setting") {
					t.Errorf("reload of %q: ok=%v %q; want it refused", text, r.OK, r.Message)
				}
				if _, err := os.Stat(filepath.Join(e.mnt, "secret")); err == nil {
					t.Errorf("after the reload of %q, the hidden file shows", text)
				}
				wantErrno(t, "write after the refused reload", os.WriteFile(filepath.Join(e.mnt, "new"), nil, 0o644), syscall.EROFS)
			}
			if !strings.Contains(e.log(), "reload failed; the policy in force stays") {
				t.Error("the refused reload is not logged")
			}
			e.stopWithin(e.pid(), 10*time.Second)
		})
	}
}

// TestEmptyPolicyRefusedAtStart: at start, too, an empty file is a mistake.
func TestEmptyPolicyRefusedAtStart(t *testing.T) {
	e := newEnv(t)
	policy := e.writePolicy("")
	r := mirrorfs(t, e.dir, e.args("--config", policy)...)
	if r.code != 1 || !strings.Contains(r.stderr, "policy "+policy+": has no setting") || mounted(e.mnt) {
		t.Errorf("start with an empty policy: exit %d, %q", r.code, r.stderr)
	}
}

// checkConfigWithin runs --check-config with a deadline much shorter than
// mirrorfs()'s own.
func checkConfigWithin(t *testing.T, path string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--check-config", path)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("--check-config %s hangs", path)
	}
	return result{code: cmd.ProcessState.ExitCode(), stderr: string(out)}
}

// TestInputsAreRegularBoundedFiles: --check-config (and the daemon, which
// reads the policy the same way) refuses a FIFO, a device and a huge file
// at once, without blocking or reading without bound.
func TestInputsAreRegularBoundedFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	syscall.Mkfifo(fifo, 0o644)
	big := filepath.Join(dir, "big.toml")
	os.WriteFile(big, []byte("hide = ['"+strings.Repeat("x", 9<<20)+"']\n"), 0o644)
	for path, want := range map[string]string{
		fifo:        "is a FIFO, not a regular file",
		"/dev/zero": "is a character device, not a regular file",
		big:         "larger than 8 MiB",
	} {
		r := checkConfigWithin(t, path)
		if r.code != 1 || !strings.Contains(r.stderr, "policy "+path+": "+want) {
			t.Errorf("--check-config %s: exit %d, %q; want 1 and %q", path, r.code, r.stderr, want)
		}
	}
}

// TestPolicySwappedForAFIFO: a reload of a policy path that is now a FIFO
// fails at once and a stop still works.
func TestPolicySwappedForAFIFO(t *testing.T) {
	e := newEnv(t)
	policy := e.writePolicy("read_only = true\n")
	e.start("--config", policy)
	fifo := policy + ".fifo"
	syscall.Mkfifo(fifo, 0o644)
	os.Rename(fifo, policy)
	if r := e.hup(); r.OK || !strings.Contains(r.Message, "is a FIFO") {
		t.Errorf("reload of a FIFO: ok=%v %q", r.OK, r.Message)
	}
	e.stopWithin(e.pid(), 10*time.Second)
}

// TestLogAndPidfileFolders: the daemon's files are refused in a folder
// anyone but root and us may write to, or that belongs to another user; a
// log that is not a regular file is refused without blocking.
func TestLogAndPidfileFolders(t *testing.T) {
	uid, gid := adversary(t)
	e := newEnv(t)
	openUp(e)
	shared := filepath.Join(e.dir, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	hers := filepath.Join(e.dir, "hers")
	os.Mkdir(hers, 0o755)
	os.Chown(hers, uid, gid)
	if out, err := asAdversary(t, "mkfifo", filepath.Join(hers, "x.log")); err != nil {
		t.Fatalf("mkfifo as the hostile user: %v %s", err, out)
	}
	fifoLog := filepath.Join(e.dir, "fifo.log")
	syscall.Mkfifo(fifoLog, 0o640)
	for _, tc := range []struct{ pidfile, log, want string }{
		{e.pidf, filepath.Join(shared, "x.log"), "log " + shared + "/x.log: folder " + shared + " is writable by others (mode 0777); refusing it"},
		{e.pidf, filepath.Join(hers, "x.log"), fmt.Sprintf("log %s/x.log: folder %s belongs to uid %d, not to root or us; refusing it", hers, hers, uid)},
		{filepath.Join(hers, "x.pid"), e.logf, fmt.Sprintf("pidfile %s/x.pid: folder %s belongs to uid %d, not to root or us; refusing it", hers, hers, uid)},
		{e.pidf, fifoLog, "log " + fifoLog + ": is not a regular file (a FIFO)"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, bin, e.src, e.mnt, "--pidfile", tc.pidfile, "--log", tc.log)
		out, _ := cmd.CombinedOutput()
		hung := ctx.Err() != nil
		cancel()
		if hung || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), tc.want) || mounted(e.mnt) {
			t.Errorf("pidfile %s, log %s: exit %d, %q; want 1 and %q", tc.pidfile, tc.log, cmd.ProcessState.ExitCode(), out, tc.want)
		}
	}
}

// TestLogSwappedForAFIFO: SIGHUP's reopen refuses a FIFO put in the log's
// place (it would block the daemon) and keeps the log it has; SIGTERM
// still stops the daemon.
func TestLogSwappedForAFIFO(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	fifo := e.logf + ".fifo"
	syscall.Mkfifo(fifo, 0o640)
	os.Rename(fifo, e.logf)
	if r := e.hup(); !r.OK {
		t.Errorf("reload: %q", r.Message)
	}
	fd, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", pid))
	if !strings.HasSuffix(fd, "(deleted)") {
		t.Errorf("fd 2 is now %s; want the old log kept", fd)
	}
	began := time.Now()
	syscall.Kill(pid, syscall.SIGTERM)
	if code := waitExit(t, pid); code != 0 || mounted(e.mnt) || time.Since(began) > 10*time.Second {
		t.Errorf("stop with a FIFO for a log: exit %d, mounted %v, took %v", code, mounted(e.mnt), time.Since(began))
	}
}

// TestAnotherUserCannotBlockARestart: after a crash the hostile user holds
// a flock on the pidfile (mode 0644: she may open it); the next start
// recovers the dead mount all the same, and the lock file is closed to her.
func TestAnotherUserCannotBlockARestart(t *testing.T) {
	uid, gid := adversary(t)
	e := newEnv(t)
	openUp(e)
	e.start("-o", "allow_other")
	pid := e.pid()
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, pid)
	hold := exec.Command("flock", "-n", e.pidf, "sleep", "60")
	hold.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hold.Process.Kill(); hold.Wait() }()
	eventually(t, "her flock on the pidfile", func() bool { return lockHolder(t, e.pidf) == hold.Process.Pid })
	lock := strings.TrimSuffix(e.pidf, ".pid") + ".lock"
	if out, err := asAdversary(t, "flock", "-n", lock, "true"); err == nil {
		t.Errorf("the hostile user took the lock file's lock: %s", out)
	}
	e.start("-o", "allow_other")
	if !strings.Contains(e.log(), "recovered a dead mount") {
		t.Error("the restart did not recover the dead mount")
	}
	e.stopWithin(e.pid(), 10*time.Second)
}

// lockHolder is the pid holding a write flock on path, by device and inode.
func lockHolder(t *testing.T, path string) int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	b, _ := os.ReadFile("/proc/locks")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == id {
			pid, _ := strconv.Atoi(f[4])
			return pid
		}
	}
	return 0
}

// TestStopSignalNeverLost: a SIGTERM in the middle of thousands of SIGHUPs
// stops the daemon, every time.
func TestStopSignalNeverLost(t *testing.T) {
	for round := 1; round <= 5; round++ {
		e := newEnv(t)
		e.start("--unmount-timeout", "2s")
		pid := e.pid()
		for i := 0; i < 3000; i++ {
			syscall.Kill(pid, syscall.SIGHUP)
		}
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 3000; i++ {
			syscall.Kill(pid, syscall.SIGHUP) // a zombie until reaped: never another process
		}
		e.stopped(pid)
		if t.Failed() {
			t.Fatalf("round %d: the SIGTERM was lost", round)
		}
	}
}

// TestDescriptorLimitRaised: the daemon runs with the soft limit at the
// hard one, raised to fs.nr_open where it may, and says which in its log.
func TestDescriptorLimitRaised(t *testing.T) {
	e := newEnv(t)
	e.start()
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", e.pid()))
	var soft, hard string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); strings.HasPrefix(line, "Max open files") && len(f) >= 5 {
			soft, hard = f[3], f[4]
		}
	}
	if soft == "" || soft != hard {
		t.Errorf("descriptors: soft %q, hard %q; want the soft limit at the hard one", soft, hard)
	}
	if !strings.Contains(e.log(), "descriptors: limit "+soft) {
		t.Errorf("the log does not say descriptors: limit %s", soft)
	}
	var mine unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &mine)
	nr, _ := os.ReadFile("/proc/sys/fs/nr_open")
	if n, _ := strconv.ParseUint(soft, 10, 64); n < mine.Max {
		t.Errorf("descriptors: limit %d, below the hard limit %d it started with", n, mine.Max)
	}
	t.Logf("descriptors: limit %s (fs.nr_open %s)", soft, strings.TrimSpace(string(nr)))
}

// TestHugePolicySummarised: 100,000 hide patterns are summarised, bounded,
// in the log and the state file, and still hide what they name.
func TestHugePolicySummarised(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			var b strings.Builder
			b.WriteString("hide = [")
			for i := 0; i < 100_000; i++ {
				fmt.Fprintf(&b, "'s%d',", i)
			}
			b.WriteString("]\n")
			os.WriteFile(filepath.Join(e.src, "s77"), nil, 0o644)
			os.WriteFile(filepath.Join(e.src, "public"), nil, 0o644)
			policy := e.writePolicy(b.String())
			e.start(append([]string{"--config", policy}, opts...)...)
			r := e.hup()
			if !r.OK || len(r.Message) > 300 || !strings.HasPrefix(r.Message, "read_only=false hide=100000 patterns (first: s0 s1 s2 ") {
				t.Errorf("reload summary (%d bytes): %.300q", len(r.Message), r.Message)
			}
			if p := e.state().Policy; len(p) > 300 {
				t.Errorf("state file policy: %d bytes", len(p))
			}
			for _, line := range strings.Split(e.log(), "\n") {
				if len(line) > 2000 {
					t.Errorf("a log line of %d bytes", len(line))
				}
			}
			names, err := os.ReadDir(e.mnt)
			if err != nil || len(names) != 1 || names[0].Name() != "public" {
				t.Errorf("listing: %v, %v; want public alone", names, err)
			}
			e.stopWithin(e.pid(), 10*time.Second)
		})
	}
}

// holdFlock runs `flock FILE sleep 60` and returns its pid once it holds
// the lock; it is killed (with its sleep) in cleanup.
func holdFlock(t *testing.T, file string) int {
	t.Helper()
	cmd := exec.Command("flock", file, "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL); cmd.Wait() })
	eventually(t, "flock to hold "+file, func() bool { return lockHolder(t, file) == pid })
	return pid
}

// TestCtlMatchesDeviceAndInode: a flock on a file of another file system
// with the same inode number as the pidfile or the lock file is not the
// daemon's, and mirrorfs-ctl never signals its holder.
func TestCtlMatchesDeviceAndInode(t *testing.T) {
	e := newEnv(t)
	c := newCtl(e, "")
	run, other := filepath.Dir(e.pidf), filepath.Join(e.dir, "other")
	tmpfsAt(t, run, "1m")
	os.Chmod(run, 0o755)
	tmpfsAt(t, other, "1m")
	lock := strings.TrimSuffix(e.pidf, ".pid") + ".lock"
	os.WriteFile(e.pidf, []byte("1\n"), 0o644) // a dead daemon's files
	os.WriteFile(lock, nil, 0o600)
	var holders []int
	for _, target := range []string{e.pidf, lock} {
		var want unix.Stat_t
		unix.Stat(target, &want)
		twin := ""
		for i := 0; i < 1000 && twin == ""; i++ {
			name := filepath.Join(other, strconv.Itoa(i))
			os.WriteFile(name, nil, 0o644)
			var st unix.Stat_t
			if unix.Stat(name, &st) == nil && st.Ino == want.Ino {
				twin = name
			}
		}
		if twin == "" {
			t.Skipf("no file on a second tmpfs with inode %d (inode numbers not per file system?)", want.Ino)
		}
		holders = append(holders, holdFlock(t, twin))
	}
	os.WriteFile(e.pidf, []byte(fmt.Sprintf("%d\n", holders[0])), 0o644) // a recycled pid
	c.want("status", 1, "dead, but pidfile")
	c.want("stop", 0, "not running")
	for _, pid := range holders {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("mirrorfs-ctl signalled %d, which holds a lock on another file system", pid)
		}
	}
}

// TestCtlStopsTheDaemonWhateverThePidfile: with the pidfile removed, or
// replaced by one naming a decoy, stop still finds the daemon through its
// lock, stops it, frees the mountpoint, and leaves the decoy alone.
func TestCtlStopsTheDaemonWhateverThePidfile(t *testing.T) {
	e := newEnv(t)
	c := newCtl(e, "")
	decoy := exec.Command("sleep", "60")
	if err := decoy.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { decoy.Process.Kill(); decoy.Wait() }()
	for _, change := range []string{"removed", "replaced"} {
		c.want("start", 0, "mirrorfs: mounted")
		pid := e.pid()
		e.pids = append(e.pids, pid)
		os.Remove(e.pidf)
		if change == "replaced" {
			os.WriteFile(e.pidf, []byte(fmt.Sprintf("%d\n", decoy.Process.Pid)), 0o644)
		}
		c.want("status", 0, fmt.Sprintf("running (pid %d)", pid))
		c.want("stop", 0, "is free")
		if mounted(e.mnt) {
			t.Errorf("pidfile %s: stop left the mount", change)
		}
		waitExit(t, pid)
		if err := decoy.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("pidfile %s: stop signalled the decoy", change)
		}
	}
}
