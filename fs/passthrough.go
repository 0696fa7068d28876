package fs

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// backing stands between go-fuse's node bridge and the server for backing
// file (passthrough) registration. go-fuse turns passthrough off for the whole
// mount at the first failed registration, silently; backing sees the failure,
// records why and logs it once.
type backing struct {
	srv      *fuse.Server
	disabled bool // -o nopassthrough
	log      *slog.Logger
	calls    *callers // nil: registered as the daemon is (not root)

	mu    sync.Mutex
	state string
}

func (b *backing) DeleteNotify(parent, child uint64, name string) fuse.Status {
	return b.srv.DeleteNotify(parent, child, name)
}
func (b *backing) EntryNotify(parent uint64, name string) fuse.Status {
	return b.srv.EntryNotify(parent, name)
}
func (b *backing) InodeNotify(node uint64, off, length int64) fuse.Status {
	return b.srv.InodeNotify(node, off, length)
}
func (b *backing) InodeRetrieveCache(node uint64, offset int64, dest []byte) (int, fuse.Status) {
	return b.srv.InodeRetrieveCache(node, offset, dest)
}
func (b *backing) InodeNotifyStoreCache(node uint64, offset int64, data []byte) fuse.Status {
	return b.srv.InodeNotifyStoreCache(node, offset, data)
}

// RegisterBackingFd is called by go-fuse on the first open of an inode,
// with that open's descriptor.
func (b *backing) RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno) {
	if b.disabled {
		return 0, syscall.ENOSYS
	}
	id, errno := b.registerCopy(m)
	if errno != 0 {
		b.set(fmt.Sprintf("off (registering a backing file failed: %v)", errno), slog.LevelWarn)
	} else {
		b.set("on", slog.LevelInfo)
	}
	return id, errno
}

// registerCopy registers a file description of m's file of its own, not
// m's: the kernel keeps the registered one for as long as any passthrough
// open of the inode lasts, and a flock lives on a file description, so the
// first opener's flock would outlive her close for as long as anyone else
// has the file open. The copy is reopened by the daemon, as root, from its
// own descriptor (through /proc, not by a path that could lead elsewhere),
// with the same access mode; the kernel keeps its own reference once it is
// registered.
func (b *backing) registerCopy(m *fuse.BackingMap) (int32, syscall.Errno) {
	fd, errno := reopen(int(m.Fd))
	if errno != 0 {
		return 0, errno
	}
	defer unix.Close(fd)
	return b.register(&fuse.BackingMap{Fd: int32(fd), Flags: m.Flags})
}

// reopen opens fd's file anew: a new file description, with fd's access
// mode, checked to be the same inode.
func reopen(fd int) (int, syscall.Errno) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, gofs.ToErrno(err)
	}
	dup, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), fl&unix.O_ACCMODE|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, gofs.ToErrno(err)
	}
	var a, c unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		unix.Close(dup)
		return -1, gofs.ToErrno(err)
	}
	if err := unix.Fstat(dup, &c); err != nil || a.Dev != c.Dev || a.Ino != c.Ino {
		unix.Close(dup)
		return -1, syscall.ESTALE
	}
	return dup, 0
}

// capSysAdmin is what registering a backing file needs (the ioctl checks
// it); nothing else is kept.
const capSysAdmin = 1 << unix.CAP_SYS_ADMIN

// nobody is the overflow id, that of no user.
const nobody = 65534

// register registers m's file. Through passthrough the kernel reads and
// writes it with the credentials of whoever registered it, for every opener
// of the inode, without asking the daemon. So the registration is made
// with none of root's power over storage: on a thread whose effective
// capabilities are CAP_SYS_ADMIN alone (no CAP_SYS_RESOURCE: no quota
// bypass; no CAP_FSETID: a write clears set-id bits) and whose file-system
// ids are the file's owner's, or nobody's for a file of root's (ext4 gives
// its reserved blocks to uid 0 as such, capability or not). So no write
// through passthrough uses root's reserve, not even root's own: less than
// root may do on SOURCE itself.
func (b *backing) register(m *fuse.BackingMap) (id int32, errno syscall.Errno) {
	if b.calls == nil {
		return b.srv.RegisterBackingFd(m)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(m.Fd), &st); err != nil {
		return 0, gofs.ToErrno(err)
	}
	t := thread{uid: st.Uid, gid: st.Gid, keep: capSysAdmin}
	if t.uid == 0 {
		t.uid = nobody
	}
	if t.gid == 0 {
		t.gid = nobody
	}
	errno = b.calls.as(t, func() syscall.Errno {
		id, errno = b.srv.RegisterBackingFd(m)
		return errno
	})
	return id, errno
}

func (b *backing) UnregisterBackingFd(id int32) syscall.Errno {
	return b.srv.UnregisterBackingFd(id)
}

// set records a new state and logs a change.
func (b *backing) set(state string, level slog.Level) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == state || strings.HasPrefix(b.state, "off") {
		return // off is final: go-fuse does not try again
	}
	b.state = state
	b.log.Log(context.Background(), level, "passthrough", "state", state)
}

// State is "on", "off (why)" or "unknown (why)".
func (b *backing) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// passthrough says whether passthrough serves the mirror's files.
func (m *shared) passthrough() bool { return m.backing != nil && m.backing.State() == "on" }

// probe finds out at start-up whether passthrough works for files of the
// source, by registering an unnamed temporary file there.
func (b *backing) probe(source string) {
	switch {
	case b.disabled:
		b.set("off (-o nopassthrough)", slog.LevelInfo)
		return
	case b.srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0:
		b.set("off (the kernel does not offer FUSE passthrough)", slog.LevelInfo)
		b.disabled = true
		return
	}
	fd, err := unix.Open(source, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		b.set(fmt.Sprintf("unknown until the first open (no temporary file in the source: %v)", err), slog.LevelInfo)
		return
	}
	defer unix.Close(fd)
	id, errno := b.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno == 0 {
		b.srv.UnregisterBackingFd(id)
	}
}

// maxStackDepth is what the source needs: one more level over overlayfs.
func maxStackDepth(source string) int {
	var st unix.Statfs_t
	if unix.Statfs(source, &st) == nil && st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		return 2
	}
	return 1
}
