package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBackgroundStartServesAndStops(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "hello.txt"), []byte("hello\n"), 0o644)
	r := e.start()
	pid := e.pid()
	want := fmt.Sprintf("mirrorfs: mounted %s at %s (pid %d, log %s, mount rw, policy read_only=false, passthrough ", e.src, e.mnt, pid, e.logf)
	if !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("start printed %q, want one line starting %q", r.stdout, want)
	}
	if r.stderr != "" {
		t.Errorf("start wrote to stderr: %q", r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(e.mnt, "hello.txt"))
	if err != nil || string(b) != "hello\n" {
		t.Errorf("reading through the mirror: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "new.txt"), []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(filepath.Join(e.src, "new.txt"))
	if err != nil || string(b) != "new" {
		t.Errorf("a write through the mirror reached the source as %q, %v", b, err)
	}
	fi, _ := os.Stat(filepath.Join(e.src, "new.txt"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file created with mode 0600 has mode %04o in the source", fi.Mode().Perm())
	}
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

// procStat returns fields of /proc/PID/stat after the command name.
func procStat(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
}

func TestDaemonProperties(t *testing.T) {
	e := newEnv(t)
	e.start()
	pid := e.pid()
	f := procStat(t, pid) // state ppid pgrp session tty_nr ...
	if ppid := f[1]; ppid != "1" && ppid != fmt.Sprint(os.Getpid()) {
		t.Errorf("parent is %s, want init or this subreaper", ppid)
	}
	if sid := f[3]; sid == fmt.Sprint(pid) {
		t.Error("the daemon is a session leader: it could acquire a controlling terminal")
	}
	if tty := f[4]; tty != "0" {
		t.Errorf("the daemon has controlling terminal %s", tty)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != "/" {
		t.Errorf("cwd is %q, want /", cwd)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(status), "Umask:\t0000") {
		t.Errorf("umask is not 0:\n%s", status)
	}
	checkFds(t, pid, e.logf)
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

// checkFds checks stdin and stdout are /dev/null, stderr the log, and every
// other descriptor close-on-exec and none a pipe (the status pipe is closed)
// or a socket, but for one listening socket: the control socket a takeover
// asks on.
func checkFds(t *testing.T, pid int, logf string) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	// The daemon closes the status pipe right after writing "ok", which
	// may be after the waiting process read it and exited.
	eventually(t, "the status pipe to be closed", func() bool { return !hasPipe(dir) })
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	listeners := 0
	for _, ent := range entries {
		target, _ := os.Readlink(filepath.Join(dir, ent.Name()))
		var fd int
		fmt.Sscan(ent.Name(), &fd)
		switch {
		case listeningUnix(t, target) && listeners == 0:
			listeners++
		case fd <= 1 && target != "/dev/null":
			t.Errorf("fd %d is %s, want /dev/null", fd, target)
		case fd == 2 && target != logf:
			t.Errorf("fd 2 is %s, want the log %s", target, logf)
		case strings.HasPrefix(target, "pipe:") || strings.HasPrefix(target, "socket:"):
			t.Errorf("fd %d is a stray %s", fd, target)
		case fd > 2 && !cloexec(t, pid, ent.Name()):
			t.Errorf("fd %d (%s) would leak into children: no O_CLOEXEC", fd, target)
		}
	}
}

// listeningUnix says whether target ("socket:[INODE]") is a listening
// unix socket (flag __SO_ACCEPTCON in /proc/net/unix).
func listeningUnix(t *testing.T, target string) bool {
	var inode string
	if _, err := fmt.Sscanf(target, "socket:[%s", &inode); err != nil {
		return false
	}
	inode = strings.TrimSuffix(inode, "]")
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line) // Num RefCount Protocol Flags Type St Inode Path
		if len(f) >= 7 && f[6] == inode {
			return f[3] == "00010000"
		}
	}
	return false
}

// hasPipe says whether a process's fd folder holds a pipe.
func hasPipe(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, ent := range entries {
		if target, _ := os.Readlink(filepath.Join(dir, ent.Name())); strings.HasPrefix(target, "pipe:") {
			return true
		}
	}
	return false
}

func cloexec(t *testing.T, pid int, fd string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return true // closed meanwhile
	}
	for _, line := range strings.Split(string(b), "\n") {
		var flags int
		if _, err := fmt.Sscanf(line, "flags:\t%o", &flags); err == nil {
			return flags&unix.O_CLOEXEC != 0
		}
	}
	t.Errorf("no flags in fdinfo %s", fd)
	return false
}

func TestStopSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t)
			e.start()
			pid := e.pid()
			f, err := os.Create(filepath.Join(e.mnt, "acked"))
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("acknowledged")
			f.Sync()
			f.Close()
			syscall.Kill(pid, sig)
			e.stopped(pid)
			if b, _ := os.ReadFile(filepath.Join(e.src, "acked")); string(b) != "acknowledged" {
				t.Errorf("a synced write is %q on the source after the stop", b)
			}
			if !strings.Contains(e.log(), "msg=unmounted") {
				t.Errorf("the log does not record the unmount:\n%s", e.log())
			}
		})
	}
}

func TestForegroundCtrlC(t *testing.T) {
	e := newEnv(t)
	cmd := exec.Command(bin, e.args("-f")...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.pids = append(e.pids, cmd.Process.Pid)
	waitMounted(t, e.mnt)
	// Mounted is not yet ready: the ready line follows; an interrupt before
	// it is a start interrupted, another test's matter.
	eventually(t, "the ready line", func() bool { return strings.Contains(e.log(), "msg=ready") })
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("foreground mirrorfs after Ctrl+C: %v\nstderr: %s", err, stderr.String())
	}
	if mounted(e.mnt) || exists(e.pidf) {
		t.Error("foreground mirrorfs left its mount or pidfile behind")
	}
	if !strings.Contains(stdout.String(), "mirrorfs: mounted") {
		t.Errorf("foreground stdout %q lacks the ready line", stdout.String())
	}
	if !strings.Contains(e.log(), "signal=interrupt") {
		t.Errorf("with --log, the foreground daemon logs to the file:\n%s", e.log())
	}
}

func TestSecondStartRefused(t *testing.T) {
	e := newEnv(t)
	e.start()
	r := mirrorfs(t, e.dir, e.args()...)
	want := fmt.Sprintf("mirrorfs: already running (pid %d, pidfile %s)", e.pid(), e.pidf)
	if r.code != 3 || strings.TrimSpace(r.stderr) != want {
		t.Errorf("second start: exit %d, stderr %q; want 3 and %q", r.code, r.stderr, want)
	}
	if _, err := os.Stat(e.mnt); err != nil || !mounted(e.mnt) {
		t.Errorf("the first daemon's mount suffered: %v", err)
	}
}

func TestKill9Recovery(t *testing.T) {
	e := newEnv(t)
	e.start()
	if err := os.WriteFile(filepath.Join(e.mnt, "data"), []byte("survives"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := e.pid()
	syscall.Kill(pid, syscall.SIGKILL)
	if code := waitExit(t, pid); code != 128+9 {
		t.Fatalf("kill -9: exit %d", code)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(e.mnt, &st); err != unix.ENOTCONN {
		t.Fatalf("after kill -9 the mount should be dead (ENOTCONN), statfs says %v", err)
	}
	e.start()
	if !strings.Contains(e.log(), "recovered a dead mount") {
		t.Errorf("the recovery is not logged:\n%s", e.log())
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, "data")); err != nil || string(b) != "survives" {
		t.Errorf("after recovery: %q, %v", b, err)
	}
	if strings.Count(mountTable(t), " "+e.mnt+" ") != 1 {
		t.Errorf("the mount table has %s more than once:\n%s", e.mnt, mountTable(t))
	}
}

func mountTable(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPassthroughState checks the state the daemon reports is the real one:
// on where the kernel offers it to root (Linux 6.9 on), off when disabled.
func TestPassthroughState(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	var uts unix.Utsname
	unix.Uname(&uts)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
	if major > 6 || major == 6 && minor >= 9 {
		if !strings.Contains(r.stdout, "passthrough on)") {
			t.Errorf("kernel %d.%d as root: %q does not report passthrough on", major, minor, r.stdout)
		}
	}
	pid := e.pid()
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)

	r = e.start("-o", "nopassthrough")
	if !strings.Contains(r.stdout, "passthrough off (-o nopassthrough))") {
		t.Errorf("-o nopassthrough: %q", r.stdout)
	}
}

// TestClosedStdio: started with stdin, stdout and stderr closed, the status
// pipe must not land on fds 0-2.
func TestClosedStdio(t *testing.T) {
	e := newEnv(t)
	cmd := exec.Command("sh", "-c", `"$0" "$@" <&- >&- 2>&-`, bin)
	cmd.Args = append(cmd.Args, e.args()...)
	if err := cmd.Run(); err != nil {
		t.Fatalf("start with stdio closed: %v", err)
	}
	e.pids = append(e.pids, e.pid())
	if !mounted(e.mnt) || !strings.Contains(e.log(), "msg=ready") {
		t.Fatal("not mounted and ready")
	}
	if strings.Contains(e.log(), "ok mirrorfs:") {
		t.Error("the status protocol leaked into the log")
	}
}

// TestStopWithTheMountInAnotherNamespace: a copy of the mount in another
// mount namespace keeps the FUSE session alive after our unmount; the stop
// must not wait for it forever.
func TestStopWithTheMountInAnotherNamespace(t *testing.T) {
	e := newEnv(t)
	e.start("--unmount-timeout", "300ms")
	pid := e.pid()
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	// The copy exists once unshare has exec'd sleep: before that, its
	// mountinfo is ours and would show the mount too.
	eventually(t, "the copy in the other namespace", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", holder.Process.Pid))
		return strings.Contains(string(b), " "+e.mnt+" ") && strings.Contains(mustRead(fmt.Sprintf("/proc/%d/comm", holder.Process.Pid)), "sleep")
	})
	e.stopWithin(pid, 5*time.Second)
	if !strings.Contains(e.log(), "outlives the unmount") {
		t.Errorf("log:\n%s", e.log())
	}
}

func mustRead(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestBuiltWithoutTheStage: a binary built without cgo has no pre-runtime
// stage; a background start must fail loudly, not run in the foreground.
func TestBuiltWithoutTheStage(t *testing.T) {
	e := newEnv(t)
	nocgo := filepath.Join(e.dir, "mirrorfs-nocgo")
	build := exec.Command("go", "build", "-o", nocgo, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building without cgo: %v\n%s", err, out)
	}
	out, err := exec.Command(nocgo, e.args()...).CombinedOutput()
	want := "mirrorfs: this binary was built without its pre-runtime stage (CGO_ENABLED=0?), so it cannot detach; rebuild with cgo, or run with -f\n"
	if err == nil || string(out) != want {
		t.Errorf("background start without the stage: %v, %q", err, out)
	}
	if mounted(e.mnt) {
		t.Error("it mounted anyway")
	}
}
