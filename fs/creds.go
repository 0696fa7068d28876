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

// as runs fn on a thread switched to t.
func (c *callers) as(t thread, fn func() syscall.Errno) syscall.Errno {
	done := make(chan syscall.Errno, 1)
	// A goroutine of its own: if the thread cannot be given back its
	// credentials, it stays locked, and Go ends it with this goroutine.
	go func() {
		runtime.LockOSThread()
		errno, err := t.run(fn)
		if err == nil {
			runtime.UnlockOSThread()
		} else {
			c.logger().Error("a thread could not get its credentials back; it ends", "err", err)
		}
		done <- errno
	}()
	return <-done
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

// run runs fn on the current, locked, thread switched to t. errno is fn's,
// or EPERM if the switch failed; err says the thread could not be restored.
func (t thread) run(fn func() syscall.Errno) (errno syscall.Errno, err error) {
	old, err := current()
	if err != nil {
		return syscall.EPERM, nil // nothing changed yet
	}
	if switchErr := t.apply(); switchErr != nil {
		return syscall.EPERM, old.restore()
	}
	errno = fn()
	return errno, old.restore()
}

// saved are a thread's credentials before a switch.
type saved struct {
	fsuid, fsgid uint32
	groups       []uint32
	caps         [2]unix.CapUserData
}

var capHeader = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}

const unchanged = ^uint32(0) // setfsuid/setfsgid(-1) only report the current id

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
func current() (saved, error) {
	s := saved{fsuid: setfsuid(unchanged), fsgid: setfsgid(unchanged)}
	var err error
	if s.groups, err = getgroups(); err != nil {
		return s, err
	}
	return s, getcaps(&s.caps)
}

// apply switches the thread: groups and ids first, while it still has
// CAP_SETGID and CAP_SETUID, then the effective capabilities go, all but
// t.keep (setfsuid drops only the file-system ones; CAP_SYS_RESOURCE, for
// one, bypasses reserves and quotas). Each step is read back.
func (t thread) apply() error {
	if err := setgroups(t.groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if setfsgid(t.gid); setfsgid(unchanged) != t.gid {
		return fmt.Errorf("setfsgid %d refused", t.gid)
	}
	if setfsuid(t.uid); setfsuid(unchanged) != t.uid {
		return fmt.Errorf("setfsuid %d refused", t.uid)
	}
	var caps [2]unix.CapUserData
	if err := getcaps(&caps); err != nil {
		return err
	}
	caps[0].Effective &= uint32(t.keep)
	caps[1].Effective &= uint32(t.keep >> 32)
	if err := setcaps(&caps); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// restore puts the thread back as s says, in the reverse order of apply
// (capabilities first: the rest needs them), and checks that it is.
func (s saved) restore() error {
	if err := setcaps(&s.caps); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	setfsuid(s.fsuid)
	setfsgid(s.fsgid)
	if err := setgroups(s.groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	now, err := current()
	switch {
	case err != nil:
		return err
	case now.fsuid != s.fsuid || now.fsgid != s.fsgid:
		return fmt.Errorf("fsuid %d, fsgid %d after restoring %d, %d", now.fsuid, now.fsgid, s.fsuid, s.fsgid)
	case !slices.Equal(now.groups, s.groups):
		return fmt.Errorf("groups %v after restoring %v", now.groups, s.groups)
	case now.caps != s.caps:
		return fmt.Errorf("capabilities %+v after restoring %+v", now.caps, s.caps)
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
