package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// threadStatus is the named lines of the calling thread's status.
func threadStatus(t *testing.T) map[string]string { return status(t, "/proc/thread-self/status") }

func status(t *testing.T, path string) map[string]string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		lines[k] = strings.Join(strings.Fields(v), " ")
	}
	return lines
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: credentials are switched, files of other owners made")
	}
}

// TestAsCallerSwitchesOneThreadAndBack: fn runs with the caller's
// file-system ids, her groups and no effective capability; the thread and
// the rest of the process are root's again afterwards.
func TestAsCallerSwitchesOneThreadAndBack(t *testing.T) {
	requireRoot(t)
	m := &shared{euid: 0}
	before := threadStatus(t)
	caller := &fuse.Caller{Owner: fuse.Owner{Uid: 1234, Gid: 5678}, Pid: uint32(os.Getpid())}
	var inside map[string]string
	errno := m.calls.as(thread{uid: 1234, gid: 5678, groups: []uint32{42, 43}}, func() syscall.Errno {
		inside = threadStatus(t)
		return 0
	})
	if errno != 0 {
		t.Fatalf("as: %v", errno)
	}
	if inside["Uid"] != "0 0 0 1234" || inside["Gid"] != "0 0 0 5678" || inside["Groups"] != "42 43" {
		t.Errorf("inside: Uid %q Gid %q Groups %q", inside["Uid"], inside["Gid"], inside["Groups"])
	}
	if inside["CapEff"] != "0000000000000000" {
		t.Errorf("inside: CapEff %s, want none", inside["CapEff"])
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, task := range tasks {
		after := status(t, task)
		for _, k := range []string{"Uid", "Gid", "Groups", "CapEff"} {
			if after[k] != before[k] {
				t.Errorf("%s: %s after: %q, before: %q", task, k, after[k], before[k])
			}
		}
	}
	// A root caller, and a daemon that is not root, run fn as it is.
	root := fuse.NewContext(context.Background(), &fuse.Caller{Pid: caller.Pid})
	m.asCaller(root, func() syscall.Errno { inside = threadStatus(t); return 0 })
	if inside["Uid"] != before["Uid"] || inside["CapEff"] != before["CapEff"] {
		t.Errorf("a root caller ran as Uid %q CapEff %s", inside["Uid"], inside["CapEff"])
	}
	other := fuse.NewContext(context.Background(), caller)
	(&shared{euid: 1000}).asCaller(other, func() syscall.Errno { inside = threadStatus(t); return 0 })
	if inside["Uid"] != before["Uid"] {
		t.Errorf("a daemon not root switched to Uid %q", inside["Uid"])
	}
	if errno := m.asCaller(context.Background(), func() syscall.Errno { return 0 }); errno != syscall.EPERM {
		t.Errorf("no caller: %v, want EPERM", errno)
	}
}

// credLines are the lines of a thread's status that a switch changes.
var credLines = []string{"Uid", "Gid", "Groups", "CapEff"}

// allThreadsAre fails t for each thread of the process whose credentials
// are not those of want (a threadStatus).
func allThreadsAre(t *testing.T, want map[string]string) {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, task := range tasks {
		got := status(t, task)
		for _, k := range credLines {
			if got[k] != want[k] {
				t.Errorf("%s: %s %q, want %q", task, k, got[k], want[k])
			}
		}
	}
}

// TestAsCallerFailedSwitchDoesNotRun: whichever step of a switch fails —
// one the kernel refuses silently (an fsuid or fsgid that is no id) or
// loudly (too many groups) — fn does not run, and no thread keeps any of
// it. (capset fails loudly too, but a capability set it refuses in a
// switch would be refused in the restore as well.)
func TestAsCallerFailedSwitchDoesNotRun(t *testing.T) {
	requireRoot(t)
	var c callers
	before := threadStatus(t)
	cases := map[string]thread{
		"fsuid":  {uid: unchanged, gid: 5678},
		"fsgid":  {uid: 1234, gid: unchanged},
		"groups": {uid: 1234, gid: 5678, groups: make([]uint32, 65537)},
	}
	for name, th := range cases {
		t.Run(name, func(t *testing.T) {
			ran := false
			errno := c.as(th, func() syscall.Errno { ran = true; return 0 })
			if ran || errno != syscall.EPERM {
				t.Errorf("fn ran: %v, errno %v; want not run, EPERM", ran, errno)
			}
			allThreadsAre(t, before)
		})
	}
}

// TestAsCallerNested: a switch asked for from within fn (whose thread has
// not the power to switch) runs on another thread, and fn's thread is
// still switched as it was when that returns: not the daemon's.
func TestAsCallerNested(t *testing.T) {
	requireRoot(t)
	var c callers
	before := threadStatus(t)
	var inner, after map[string]string
	errno := c.as(thread{uid: 1234, gid: 5678}, func() syscall.Errno {
		if errno := c.as(thread{uid: 2345, gid: 6789}, func() syscall.Errno {
			inner = threadStatus(t)
			return 0
		}); errno != 0 {
			return errno
		}
		after = threadStatus(t)
		return 0
	})
	if errno != 0 {
		t.Fatalf("as: %v", errno)
	}
	if inner["Uid"] != "0 0 0 2345" || inner["Gid"] != "0 0 0 6789" || inner["CapEff"] != "0000000000000000" {
		t.Errorf("inner: Uid %q Gid %q CapEff %s", inner["Uid"], inner["Gid"], inner["CapEff"])
	}
	if after["Uid"] != "0 0 0 1234" || after["Gid"] != "0 0 0 5678" || after["CapEff"] != "0000000000000000" {
		t.Errorf("outer after inner: Uid %q Gid %q CapEff %s", after["Uid"], after["Gid"], after["CapEff"])
	}
	allThreadsAre(t, before)
}

// TestAsCallerPanicRestores: go-fuse recovers from a panic in a request;
// the thread it happened on is the daemon's again by then.
func TestAsCallerPanicRestores(t *testing.T) {
	requireRoot(t)
	var c callers
	before := threadStatus(t)
	var after map[string]string
	func() {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
			after = threadStatus(t) // still on the thread that panicked
		}()
		c.as(thread{uid: 1234, gid: 5678}, func() syscall.Errno { panic("fn") })
	}()
	for _, k := range credLines {
		if after[k] != before[k] {
			t.Errorf("after the panic: %s %q, want %q", k, after[k], before[k])
		}
	}
	allThreadsAre(t, before)
}

// TestAsCallerConcurrent: many switches at once, some blocking in a system
// call (so Go starts threads meanwhile), each see only their own
// credentials; goroutines that do not switch never see any but the
// daemon's, and every thread is the daemon's afterwards.
func TestAsCallerConcurrent(t *testing.T) {
	requireRoot(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var c callers
	before := threadStatus(t)
	base, err := baseline()
	if err != nil {
		t.Fatal(err)
	}
	var wrong atomic.Int64
	var report sync.Once
	bad := func(format string, args ...any) {
		wrong.Add(1)
		report.Do(func() { t.Errorf(format, args...) })
	}
	stop := make(chan struct{})
	var observers sync.WaitGroup
	for range 2 {
		observers.Add(1)
		go func() {
			defer observers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var caps [2]unix.CapUserData
				getcaps(&caps)
				if uid := setfsuid(unchanged); uid != base.fsuid || caps != base.caps {
					bad("a goroutine not switched ran with fsuid %d, caps %+v", uid, caps)
				}
				runtime.Gosched()
			}
		}()
	}
	var switchers sync.WaitGroup
	for i := range 8 {
		switchers.Add(1)
		go func() {
			defer switchers.Done()
			for j := range 300 {
				th := thread{uid: uint32(1000 + i), gid: uint32(2000 + j%3), groups: []uint32{uint32(3000 + j%2)}}
				c.as(th, func() syscall.Errno {
					var caps [2]unix.CapUserData
					getcaps(&caps)
					if uid, gid := setfsuid(unchanged), setfsgid(unchanged); uid != th.uid || gid != th.gid || caps[0].Effective|caps[1].Effective != 0 {
						bad("as %d/%d ran with %d/%d, effective %+v", th.uid, th.gid, uid, gid, caps)
					}
					if j%10 == 0 {
						unix.Nanosleep(&unix.Timespec{Nsec: 100_000}, nil)
					}
					return 0
				})
			}
		}()
	}
	switchers.Wait()
	close(stop)
	observers.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d wrong credentials seen", n)
	}
	allThreadsAre(t, before)
}

// TestRestoreFailureEndsTheDaemon: a thread that cannot get the daemon's
// credentials back never returns to serve: the process ends, loudly. The
// test runs itself again with a daemon fsgid no thread can be given.
func TestRestoreFailureEndsTheDaemon(t *testing.T) {
	requireRoot(t)
	if os.Getenv("MIRRORFS_TEST_RESTORE_FAILS") == "1" {
		if _, err := baseline(); err != nil {
			t.Fatal(err)
		}
		daemonCreds.creds.fsgid = unchanged
		var c callers
		c.as(thread{uid: 1234, gid: 5678}, func() syscall.Errno { fmt.Println("ran"); return 0 })
		fmt.Println("returned")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRestoreFailureEndsTheDaemon$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MIRRORFS_TEST_RESTORE_FAILS=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := -1
	if e, ok := err.(*exec.ExitError); ok {
		code = e.ExitCode()
	}
	if code != 1 || !strings.Contains(string(out), "ran") || strings.Contains(string(out), "returned") {
		t.Errorf("exit %d (%v), stdout %q; want 1 after fn ran, before as returned", code, err, out)
	}
	if !strings.Contains(stderr.String(), "could not get the daemon's credentials back") {
		t.Errorf("stderr %q: nothing said", stderr.String())
	}
}

// TestCallerGroupsFromProc: the groups are the process's if its ids are the
// request's, none otherwise, and none for pid 0.
func TestCallerGroupsFromProc(t *testing.T) {
	var g groupCache
	self := uint32(os.Getpid())
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	want, _ := os.Getgroups()
	got := g.of(&fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: gid}, Pid: self})
	if len(got) != len(want) {
		t.Errorf("groups %v, want %v", got, want)
	}
	if got := readGroups(groupKey{self, uid + 1, gid}); got != nil {
		t.Errorf("another uid's request got groups %v", got)
	}
	if got := g.of(&fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: gid}}); got != nil {
		t.Errorf("pid 0 got groups %v", got)
	}
}

// BenchmarkAsCaller: the cost of one request carried out as its caller
// (a switch there and back, fn doing nothing), with her groups the
// daemon's and with groups of her own.
func BenchmarkAsCaller(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: credentials are switched")
	}
	m := &shared{euid: 0}
	nothing := func() syscall.Errno { return 0 }
	own, _ := os.Getgroups()
	same := make([]uint32, len(own))
	for i, g := range own {
		same[i] = uint32(g)
	}
	for name, groups := range map[string][]uint32{"daemons-groups": same, "own-groups": {42, 43}} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				m.calls.as(thread{uid: 1234, gid: 5678, groups: groups}, nothing)
			}
		})
	}
}
