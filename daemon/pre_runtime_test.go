//go:build linux && cgo

package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary play the daemon: run with a background
// mount request as its command line (and argv[0] not *.test), the stage
// detaches it, and instead of mounting it reports what the stage left.
func TestMain(m *testing.M) {
	if st := readStage(); st.ran {
		os.Exit(reportStage(st))
	}
	if mode := os.Getenv(probeEnv); mode != "" {
		os.Exit(probeChild(mode, OSEnv()))
	}
	os.Exit(m.Run())
}

// stageReport is what the detached process saw, sent on the status pipe.
type stageReport struct {
	Pid, Ppid, Pgid, Sid int
	Cwd, SavedCwd        string
	Umask                int
	StatusFd             int
	Fds                  map[int]string // every open descriptor and what it is
}

func reportStage(st stage) int {
	r := stageReport{Pid: unix.Getpid(), Ppid: unix.Getppid(), Pgid: unix.Getpgrp(),
		StatusFd: st.statusFd, SavedCwd: st.cwd, Umask: unix.Umask(0)}
	unix.Umask(r.Umask)
	r.Sid, _ = unix.Getsid(0)
	r.Cwd, _ = unix.Getwd()
	r.Fds = openFds()
	b, _ := json.Marshal(r)
	if _, err := unix.Write(st.statusFd, append(append([]byte("ok "), b...), '\n')); err != nil {
		return 1
	}
	return 0
}

// openFds lists /proc/self/fd with raw system calls, so that nothing of
// Go's own (a poller) joins the list, and leaves out its own descriptor.
func openFds() map[int]string {
	fds := map[int]string{}
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fds
	}
	defer unix.Close(dir)
	buf := make([]byte, 8192)
	for {
		n, err := unix.ReadDirent(dir, buf)
		if err != nil || n <= 0 {
			return fds
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			fd, _ := strconv.Atoi(name)
			if fd == dir {
				continue
			}
			target := make([]byte, 256)
			k, _ := unix.Readlink("/proc/self/fd/"+name, target)
			fds[fd] = string(target[:max(k, 0)])
		}
	}
}

// TestStageReExec runs this test binary as a background mount request and
// checks each step of the detach (APUE 13.3) in what the daemon reports.
func TestStageReExec(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Adopt the detached process, so that it can be reaped here.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(t.TempDir())
	stdin, err := os.Create(filepath.Join(dir, "stdin"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stray, err := os.Open(dir) // inherited: not the daemon's to keep
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "src", "mnt")
	cmd.Args[0] = "mirrorfs" // not *.test: the gate opens
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no NOTIFY_SOCKET
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	// fd 3 and fd 8, with a gap where the status pipe lands: strays on
	// either side of it.
	cmd.ExtraFiles = []*os.File{stray, nil, nil, nil, nil, stray}
	old := unix.Umask(0o027) // the daemon must not keep it
	err = cmd.Start()
	unix.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the original process: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var r stageReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("no report on the status pipe: %v\nstdout: %q\nstderr: %q", err, stdout.String(), stderr.String())
	}
	reap(t, r.Pid)
	checkReport(t, r, cmd.Process.Pid, dir)
}

func checkReport(t *testing.T, r stageReport, original int, dir string) {
	t.Helper()
	ourSid, _ := unix.Getsid(0)
	if r.Sid == ourSid || r.Sid != r.Pgid {
		t.Errorf("setsid: session %d, group %d (ours %d): want a new session, led by its group", r.Sid, r.Pgid, ourSid)
	}
	if r.Pid == r.Sid {
		t.Errorf("the daemon (pid %d) leads its session: a terminal it opens would become its controlling one", r.Pid)
	}
	if r.Pid == original || r.Ppid == original {
		t.Errorf("the daemon is pid %d, child of %d: want neither the original process %d nor its child", r.Pid, r.Ppid, original)
	}
	if r.Cwd != "/" {
		t.Errorf("cwd %q, want /", r.Cwd)
	}
	if r.SavedCwd != dir {
		t.Errorf("the stage saved cwd %q, want %q", r.SavedCwd, dir)
	}
	if r.Umask != 0 {
		t.Errorf("umask %#o, want 0", r.Umask)
	}
	for fd := 0; fd <= 2; fd++ {
		if r.Fds[fd] != "/dev/null" {
			t.Errorf("fd %d is %q, want /dev/null", fd, r.Fds[fd])
		}
	}
	if r.StatusFd <= 2 || !strings.HasPrefix(r.Fds[r.StatusFd], "pipe:") {
		t.Errorf("the status fd %d is %q, want a pipe above 2", r.StatusFd, r.Fds[r.StatusFd])
	}
	for fd, what := range r.Fds {
		if fd > 2 && fd != r.StatusFd && !runtimeFd(what) {
			t.Errorf("stray fd %d (%s) left open by the stage", fd, what)
		}
	}
}

// runtimeFd says whether a descriptor is one the Go runtime opens for
// itself at start-up, after the stage (its poller; the cgroup CPU limits it
// sizes GOMAXPROCS from). Anything else was inherited.
func runtimeFd(what string) bool {
	return strings.HasPrefix(what, "/sys/fs/cgroup/") ||
		what == "anon_inode:[eventpoll]" || what == "anon_inode:[eventfd]"
}

// reap waits for the detached process to end, with a deadline.
func reap(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid || errors.Is(err, unix.ECHILD) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Kill(pid, unix.SIGKILL)
	t.Errorf("the detached process %d did not end", pid)
}
