package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// healthEvery is the daemon's health interval (daemon/health.go).
const healthEvery = 5 * time.Second

// TestNoSyscallOnOwnMount traces the serving daemon (strace -f) through two
// health intervals, a SIGHUP reload and an auto_remount, and fails on any
// system call of the daemon's that names a path under its own mountpoint,
// directly, through a descriptor (strace -y), or through /proc/self/fd/N:
// a thread blocked on its own mount can make the daemon unkillable. Mounting
// and detaching MNT act on the mount table, not through the mount, and a
// child process (an "answers?" probe with a deadline) is not the daemon.
func TestNoSyscallOnOwnMount(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("strace is not installed (scripts/test-deps installs it)")
		}
		t.Skip("strace is not installed")
	}
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		os.WriteFile(filepath.Join(e.src, "f"), []byte("data"), 0o644)
		e.start(append([]string{"-o", "auto_remount"}, mode...)...)
		pid := e.pid()
		trace := filepath.Join(e.dir, "strace.out")
		tids, stop := straceDaemon(t, pid, trace)
		touchMirror(t, e)
		time.Sleep(healthEvery + time.Second) // an observation span, not a synchronisation
		syscall.Kill(pid, syscall.SIGHUP)
		eventually(t, "the reload", func() bool { return strings.Contains(e.log(), "log reopened") })
		if err := os.WriteFile(abortFile(t, e.mnt), []byte("1"), 0o200); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the remount", func() bool { return strings.Contains(e.log(), "msg=remounted") })
		touchMirror(t, e)
		time.Sleep(healthEvery + time.Second) // a health interval on the new mount
		stop()
		bad := ownMountCalls(t, trace, e.mnt, tids())
		for i, line := range bad {
			if i == 20 {
				t.Errorf("... and %d more", len(bad)-i)
				break
			}
			t.Errorf("the daemon named its own mount: %s", line)
		}
		if len(bad) == 0 {
			t.Logf("no system call of the daemon named %s", e.mnt)
		}
		syscall.Kill(pid, syscall.SIGTERM)
		e.stopped(pid)
	})
}

// touchMirror makes the mirror serve a few requests (from this process).
func touchMirror(t *testing.T, e *env) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(e.mnt, "f")); err != nil || string(b) != "data" {
		t.Fatalf("reading through the mirror: %q, %v", b, err)
	}
	if _, err := os.ReadDir(e.mnt); err != nil {
		t.Fatal(err)
	}
}

// straceDaemon attaches strace to every thread of pid, writing to out. It
// returns once all are traced; tids reports every thread of the daemon seen
// while tracing, stop detaches (bounded).
func straceDaemon(t *testing.T, pid int, out string) (tids func() map[int]bool, stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, "strace", "-f", "-qq", "-y", "-s", "4096",
		"-e", "trace=%file,%desc,%process", "-o", out, "-p", strconv.Itoa(pid))
	cmd.WaitDelay = 10 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	seen := map[int]bool{}
	eventually(t, "strace to attach to every thread", func() bool {
		all := true
		for _, tid := range taskIDs(pid) {
			seen[tid] = true
			all = all && tracer(pid, tid) == cmd.Process.Pid
		}
		return all
	})
	quit, done := make(chan struct{}), make(chan struct{})
	go func() { // a new thread is listed here while it lives
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
				for _, tid := range taskIDs(pid) {
					seen[tid] = true
				}
			}
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		close(quit)
		<-done
		cmd.Process.Signal(syscall.SIGTERM) // strace detaches and exits
		if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "signal") {
			t.Errorf("strace: %v: %s", err, stderr.String())
		}
		cancel()
	}
	t.Cleanup(stop)
	return func() map[int]bool { return seen }, stop
}

func taskIDs(pid int) []int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var tids []int
	for _, ent := range ents {
		if tid, err := strconv.Atoi(ent.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids
}

// tracer is the TracerPid of a thread, or 0.
func tracer(pid, tid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

var (
	// "TID name(args) = result", or its unfinished and resumed halves.
	traceLine = regexp.MustCompile(`^(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)`)
	fdPath    = regexp.MustCompile(`(\d+)<([^>]*)>`)
	procFd    = regexp.MustCompile(`"/proc/(?:self|thread-self|\d+)(?:/task/\d+)?/fd/(\d+)`)
)

// The calls whose quoted arguments are data, not paths: what the daemon
// writes (its statistics name the mountpoint) says nothing of where; their
// descriptors do. strace cuts a long buffer at -s bytes, and a cut right
// after the mountpoint's name would read as a quoted path.
var dataCalls = map[string]bool{"read": true, "write": true, "pread64": true, "pwrite64": true,
	"readv": true, "writev": true, "preadv": true, "pwritev": true, "preadv2": true, "pwritev2": true,
	"sendto": true, "recvfrom": true, "sendmsg": true, "recvmsg": true}

// The calls that name MNT without going through the mount.
var mountTableCalls = map[string]bool{"mount": true, "umount2": true, "umount": true,
	"fsmount": true, "move_mount": true, "open_tree": true, "mount_setattr": true}

// noRequest says whether a call naming mnt cannot send its file system a
// request: a close; an O_PATH open that ends on mnt itself (crossing into a
// mount's root asks nothing of it, and O_PATH opens nothing); a statx of a
// descriptor that may answer only from the kernel's cache
// (AT_STATX_DONT_SYNC). Mounting on MNT and detaching from it need these,
// and only these. Leaving the mount's root by ".." is not among them: the
// walk checks permission on the root first, which asks the daemon for the
// root's attributes.
func noRequest(call, line, mnt string) bool {
	switch call {
	case "close":
		return true
	case "openat", "openat2":
		return strings.Contains(line, "O_PATH") && strings.HasSuffix(line, "<"+mnt+">")
	case "statx":
		return strings.Contains(line, "AT_STATX_DONT_SYNC") && strings.Contains(line, `, "", `)
	}
	return false
}

// ownMountCalls returns the traced calls of the daemon's threads that name
// a path under mnt.
func ownMountCalls(t *testing.T, trace, mnt string, tids map[int]bool) []string {
	t.Helper()
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	under := func(p string) bool { return p == mnt || strings.HasPrefix(p, mnt+"/") }
	fds := map[string]string{}     // what strace -y showed each descriptor to be
	unfinished := map[int]string{} // per thread: the start of a call cut short
	var bad []string
	lines := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		lines++
		m := traceLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		tid, _ := strconv.Atoi(m[1])
		for _, fp := range fdPath.FindAllStringSubmatch(line, -1) {
			fds[fp[1]] = fp[2]
		}
		if !tids[tid] || mountTableCalls[m[2]] {
			continue
		}
		// A call cut short by another thread's is judged whole, once
		// resumed: its path is in the first half, its result in the second.
		whole := line
		switch {
		case strings.HasSuffix(line, "<unfinished ...>"):
			unfinished[tid] = strings.TrimSuffix(line, "<unfinished ...>")
			continue
		case strings.Contains(line, " resumed>"):
			_, rest, _ := strings.Cut(line, " resumed>")
			whole = unfinished[tid] + rest
			delete(unfinished, tid)
		}
		args := whole
		if dataCalls[m[2]] { // the descriptor alone: the rest is data
			args, _, _ = strings.Cut(whole, ", ")
		}
		named := strings.Contains(args, `"`+mnt+`"`) || strings.Contains(args, `"`+mnt+`/`)
		for _, fp := range fdPath.FindAllStringSubmatch(args, -1) {
			named = named || under(fp[2])
		}
		for _, pf := range procFd.FindAllStringSubmatch(args, -1) {
			named = named || under(fds[pf[1]])
		}
		if named && !noRequest(m[2], whole, mnt) {
			bad = append(bad, whole)
		}
	}
	for tid, start := range unfinished { // cut short when tracing stopped
		if strings.Contains(start, `"`+mnt) && !strings.Contains(start, "O_PATH") {
			bad = append(bad, fmt.Sprintf("%s (thread %d, unfinished)", start, tid))
		}
	}
	if lines == 0 {
		t.Fatal("strace traced nothing")
	}
	return bad
}
