package fs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
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
