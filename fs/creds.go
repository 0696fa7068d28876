package fs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Forwarding as root is acting as root: a file made by root and given away
// afterwards can be swapped for root's own at its name in between, and a
// write by root may use the blocks ext4 keeps for root and go over quotas.
// So what a non-root caller asks of SOURCE is done with her credentials, as
// virtiofsd and the NFS servers do: on a thread of its own, whose file-system
// uid, gid and groups are hers and whose effective capabilities are none.
// The kernel then checks, charges and owns everything as it would for her.
//
// The file-system ids are switched, not the effective ones as virtiofsd
// does: while a thread's euid is hers, she may renice, pin or reschedule it
// (setpriority, sched_setaffinity and sched_setscheduler check its euid),
// and that outlasts the switch. The fsuid and fsgid are all that files are
// checked, made and charged by; the capabilities go explicitly.
//
// These are raw syscalls on one locked thread: Linux keeps credentials per
// thread, and only the C library's and Go's setuid calls spread them to all.
// While a goroutine is locked to a thread, Go starts new threads from a
// thread kept for that purpose, never from the locked one, so no thread is
// born with the caller's credentials.

// callers switches threads to a request's caller.
type callers struct {
	log    *slog.Logger // where a failed restore is told; slog.Default if nil
	groups groupCache
}

// asCaller runs fn with the credentials of ctx's caller when the daemon
// runs as root and the caller is not root; otherwise (root's own requests,
// a daemon that is not root) fn runs as it is. If the thread cannot be
// switched, fn does not run: EPERM.
func (m *shared) asCaller(ctx context.Context, fn func() syscall.Errno) syscall.Errno {
	c, ok := fuse.FromContext(ctx)
	if m.euid != 0 || ok && c.Uid == 0 {
		return fn()
	}
	if !ok {
		return syscall.EPERM // no caller known: nobody's power, not root's
	}
	return m.calls.as(thread{uid: c.Uid, gid: c.Gid, groups: m.calls.groups.of(c)}, fn)
}

// switches says whether asCaller would switch credentials for ctx's caller.
func (m *shared) switches(ctx context.Context) bool {
	c, ok := fuse.FromContext(ctx)
	return m.euid == 0 && (!ok || c.Uid != 0)
}

// as runs fn on the calling goroutine's thread, locked and switched to t,
// and switches it back. A switch to the daemon's own fsuid is no switch:
// refused, so that a thread's fsuid says whether it is switched.
//
// The request's own goroutine is locked, rather than a goroutine started
// for each call (as much again as the switch's system calls, more under
// load) or a pool of locked workers (a hand-off to a locked thread costs
// more than the switch itself): locking costs nothing (BenchmarkAsCaller).
// The price is that a thread that cannot be switched back must not return
// to the request's caller, which would go on serving others on it; so the
// daemon ends (restoreOrEnd). Restoring a root thread's own credentials
// fails only when the kernel cannot allocate a few hundred bytes, as
// virtiofsd assumes when it exits on a failed restore. The restore is
// deferred: a panic in fn, which go-fuse recovers from, does not leave the
// thread switched either.
func (c *callers) as(t thread, fn func() syscall.Errno) syscall.Errno {
	return c.run(t, fn, true)
}

// run is as; if the thread is switched already (fn calls as), fn runs on
// another goroutine's thread when mayMove, else not at all.
func (c *callers) run(t thread, fn func() syscall.Errno, mayMove bool) syscall.Errno {
	base, err := baseline()
	if err != nil || t.uid == base.fsuid {
		return syscall.EPERM
	}
	runtime.LockOSThread()
	nested, err := t.apply(base)
	if nested {
		runtime.UnlockOSThread()
		if !mayMove {
			return syscall.EPERM // a thread switched that is no one's: never
		}
		return c.elsewhere(t, fn)
	}
	defer c.restoreOrEnd(base, t)
	if err != nil {
		return syscall.EPERM
	}
	return fn()
}

// elsewhere runs fn as t from within another fn, whose thread is switched
// and has not the power to switch again: on the thread of a new goroutine,
// which is not switched, as the switched one stays locked to this one.
func (c *callers) elsewhere(t thread, fn func() syscall.Errno) syscall.Errno {
	done := make(chan syscall.Errno, 1)
	go func() { done <- c.run(t, fn, false) }()
	return <-done
}

// restoreOrEnd switches the locked thread back from t to base and unlocks
// it; if it cannot, the daemon ends (see as).
func (c *callers) restoreOrEnd(base *creds, t thread) {
	var err error
	for try := 0; try < 2; try++ {
		if err = base.restore(t); err == nil {
			runtime.UnlockOSThread()
			return
		}
	}
	c.logger().Error("a thread could not get the daemon's credentials back; the daemon ends", "err", err)
	os.Exit(1)
}

// registrar is what registers backing files with less than root's power
// (backing.register), or nil where the daemon is not root.
func (m *shared) registrar() *callers {
	if m.euid != 0 {
		return nil
	}
	return &m.calls
}

func (c *callers) logger() *slog.Logger {
	if c.log == nil {
		return slog.Default()
	}
	return c.log
}

// thread is what a thread's credentials are switched to: file-system uid
// and gid, supplementary groups, and of the effective capabilities only
// those in keep (a mask of 1<<CAP_x; 0 for none).
type thread struct {
	uid, gid uint32
	groups   []uint32
	keep     uint64
}

// creds are a thread's credentials.
type creds struct {
	fsuid, fsgid uint32
	groups       []uint32
	caps         [2]unix.CapUserData
}

// daemonCreds holds the daemon's own credentials, which every thread has while
// it is not switched: read once, as they do not change while it serves.
var daemonCreds struct {
	once  sync.Once
	creds creds
	err   error
}

func baseline() (*creds, error) {
	daemonCreds.once.Do(func() {
		runtime.LockOSThread() // the four reads from one thread
		defer runtime.UnlockOSThread()
		daemonCreds.creds, daemonCreds.err = current()
	})
	return &daemonCreds.creds, daemonCreds.err
}

var capHeader = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}

// unchanged makes setfsuid and setfsgid only report the current id, at
// the price of a plain system call: an id that is no id is refused before
// the kernel prepares new credentials, which is what costs.
const unchanged = ^uint32(0)

// setfsuid and setfsgid return the id before the call, whether or not it
// changed it: a failure is silent.
func setfsuid(id uint32) uint32 {
	prev, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(id), 0, 0)
	return uint32(prev)
}

func setfsgid(id uint32) uint32 {
	prev, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(id), 0, 0)
	return uint32(prev)
}

func setgroups(groups []uint32) error {
	var p uintptr
	if len(groups) > 0 {
		p = uintptr(unsafe.Pointer(&groups[0]))
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), p, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getgroups() ([]uint32, error) {
	n, _, e := unix.RawSyscall(unix.SYS_GETGROUPS, 0, 0, 0)
	if e != 0 {
		return nil, e
	}
	groups := make([]uint32, n)
	if n == 0 {
		return groups, nil
	}
	got, _, e := unix.RawSyscall(unix.SYS_GETGROUPS, n, uintptr(unsafe.Pointer(&groups[0])), 0)
	if e != 0 {
		return nil, e
	}
	return groups[:got], nil
}

func getcaps(caps *[2]unix.CapUserData) error {
	h := capHeader
	return unix.Capget(&h, &caps[0])
}

func setcaps(caps *[2]unix.CapUserData) error {
	h := capHeader
	return unix.Capset(&h, &caps[0])
}

// current reads the calling thread's credentials.
func current() (creds, error) {
	s := creds{fsuid: setfsuid(unchanged), fsgid: setfsgid(unchanged)}
	var err error
	if s.groups, err = getgroups(); err != nil {
		return s, err
	}
	return s, getcaps(&s.caps)
}

// apply switches the thread from base to t. Each credential the kernel
// sets anew costs it an allocation (about as much as the rest of a
// request), so apply sets only what differs from base, and reads back only
// what can fail silently: the file-system ids.
//
// The fsuid goes first: what setfsuid returns says whether the thread was
// base's (if not, it is switched already: nested, and unchanged, as it has
// not the power to change). Then, while the thread still has CAP_SETGID
// (setfsuid drops only the file-system capabilities), the gid and the
// groups; then the effective capabilities go, all but t.keep (CAP_SYS_RESOURCE,
// for one, bypasses reserves and quotas).
func (t thread) apply(base *creds) (nested bool, err error) {
	if prev := setfsuid(t.uid); prev != base.fsuid {
		setfsuid(prev) // should t.uid have been allowed after all
		return true, nil
	}
	if t.gid != base.fsgid {
		setfsgid(t.gid)
	}
	if !slices.Equal(t.groups, base.groups) {
		if err := setgroups(t.groups); err != nil {
			return false, fmt.Errorf("setgroups: %w", err)
		}
	}
	if setfsuid(unchanged) != t.uid {
		return false, fmt.Errorf("setfsuid %d refused", t.uid)
	}
	if setfsgid(unchanged) != t.gid {
		return false, fmt.Errorf("setfsgid %d refused", t.gid)
	}
	caps := base.caps
	caps[0].Effective &= uint32(t.keep)
	caps[1].Effective &= uint32(t.keep >> 32)
	if err := setcaps(&caps); err != nil {
		return false, fmt.Errorf("capset: %w", err)
	}
	return false, nil
}

// restore switches the thread back from t (or from as far as apply got
// towards it) to s. The ids go first: fsuid and fsgid back to the thread's
// real ones need no capability; then the capabilities are set, exactly
// (a return to fsuid 0 raises the file-system ones); then, with
// CAP_SETGID, the groups. The ids are read back, for their failure is
// silent; capset and setgroups say theirs.
func (s *creds) restore(t thread) error {
	setfsuid(s.fsuid)
	if t.gid != s.fsgid {
		setfsgid(s.fsgid)
	}
	if err := setcaps(&s.caps); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if !slices.Equal(t.groups, s.groups) {
		if err := setgroups(s.groups); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
	}
	if uid, gid := setfsuid(unchanged), setfsgid(unchanged); uid != s.fsuid || gid != s.fsgid {
		return fmt.Errorf("fsuid %d, fsgid %d after restoring %d, %d", uid, gid, s.fsuid, s.fsgid)
	}
	return nil
}

// groupCache keeps callers' supplementary groups briefly: FUSE tells only a
// caller's uid, gid and pid, and her groups are read from /proc/PID/status,
// which should not happen at every request. So a process whose groups
// change keeps its old ones for up to groupsTTL, and a pid reused within
// that time by a process of the same uid and gid gets the groups cached for
// the first. A caller whose groups cannot be read (pid 0: a process the
// daemon cannot see; gone; its ids not the request's) gets none, which
// gives her less than she has, never more.
type groupCache struct {
	mu      sync.Mutex
	entries map[groupKey]groupEntry
}

type groupKey struct{ pid, uid, gid uint32 }

type groupEntry struct {
	groups  []uint32
	expires time.Time
}

const (
	groupsTTL = time.Second
	maxGroups = 4096 // entries; past it, the cache starts again empty
)

// of returns c's supplementary groups.
func (g *groupCache) of(c *fuse.Caller) []uint32 {
	if c.Pid == 0 {
		return nil
	}
	key := groupKey{c.Pid, c.Uid, c.Gid}
	now := time.Now()
	g.mu.Lock()
	e, ok := g.entries[key]
	g.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.groups
	}
	groups := readGroups(key)
	g.mu.Lock()
	if g.entries == nil || len(g.entries) >= maxGroups {
		g.entries = make(map[groupKey]groupEntry)
	}
	g.entries[key] = groupEntry{groups: groups, expires: now.Add(groupsTTL)}
	g.mu.Unlock()
	return groups
}

// readGroups reads the groups of process k.pid, if its file-system uid and
// gid are k's: otherwise the pid is another process's by now.
func readGroups(k groupKey) []uint32 {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(k.pid), 10) + "/status")
	if err != nil {
		return nil
	}
	var groups []uint32
	match := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		key, rest, _ := bytes.Cut(line, []byte(":"))
		f := bytes.Fields(rest)
		switch string(key) {
		case "Uid", "Gid":
			want := k.uid
			if key[0] == 'G' {
				want = k.gid
			}
			if len(f) == 4 && string(f[3]) == strconv.FormatUint(uint64(want), 10) {
				match++
			}
		case "Groups":
			for _, s := range f {
				id, err := strconv.ParseUint(string(s), 10, 32)
				if err != nil {
					return nil
				}
				groups = append(groups, uint32(id))
			}
		}
	}
	if match != 2 {
		return nil
	}
	return groups
}
