package fs

import (
	"context"
	"slices"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// Handles: the mirror's open files (file, over go-fuse's LoopbackFile) and
// open folders (dir, over its directory stream), and each node's list of
// them.

// Each node keeps a list of its open files and folders: once no folder
// holds the node, they are the only way to it, and the kernel still asks
// for a chmod, a utimens or an xattr of it by node.
type handle interface {
	descriptor() (int, bool)
}

func (n *node) addHandle(h handle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handles = append(n.handles, h)
	if f, ok := h.(*file); ok {
		if fd, ok := f.PassthroughFd(); ok {
			n.m.watch.addFile(n, fd) // under n.mu: in step with dropHandle
		}
	}
}

// dropHandle takes h off the list, before it is closed: openLoc never copies
// a descriptor that is closing.
func (n *node) dropHandle(h handle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handles = slices.DeleteFunc(n.handles, func(g handle) bool { return g == h })
	if _, ok := h.(*file); ok && len(n.handles) == 0 {
		n.m.watch.removeFile(n)
	}
}

// file is an open file of the mirror.
type file struct {
	*gofs.LoopbackFile
	n       *node
	appends bool // its descriptor is O_APPEND (writeInPlace)
}

func (n *node) newFile(fd int) *file {
	f := &file{LoopbackFile: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), n: n}
	n.addHandle(f)
	return f
}

func (f *file) descriptor() (int, bool) { return f.PassthroughFd() }

var _ = (gofs.FileReleaser)((*file)(nil))

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.n.dropHandle(f)
	return f.LoopbackFile.Release(ctx)
}

var _ = (gofs.FileWriter)((*file)(nil))

// Write writes as the caller: the blocks it takes are charged and limited
// as hers (no root reserve, no quota bypass), and a write to a set-id file
// clears its set-id bits as one by her does. (Through passthrough the kernel
// writes without asking; see backing.)
func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.appends && writingBack(ctx) {
		return f.writeInPlace([][]byte{data}, off)
	}
	var n uint32
	errno := f.n.m.asCaller(ctx, func() (errno syscall.Errno) {
		n, errno = f.LoopbackFile.Write(ctx, data, off)
		return errno
	})
	f.appended(off, n, errno)
	return n, errno
}

var _ = (gofs.FileAllocater)((*file)(nil))

// Allocate reserves blocks as the caller, as Write does.
func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return f.n.m.asCaller(ctx, func() syscall.Errno { return f.LoopbackFile.Allocate(ctx, off, size, mode) })
}

var _ = (gofs.FileWritever)((*file)(nil))

// Writev writes as the caller, as Write does: go-fuse calls it for a write
// whose data comes in pieces, and LoopbackFile's would write as root.
func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if f.appends && writingBack(ctx) {
		return f.writeInPlace(data, off)
	}
	var n uint32
	errno := f.n.m.asCaller(ctx, func() (errno syscall.Errno) {
		n, errno = f.LoopbackFile.Writev(ctx, data, off)
		return errno
	})
	f.appended(off, n, errno)
	return n, errno
}

// writeInPlace writes data at off through f's O_APPEND descriptor: with
// RWF_NOAPPEND (Linux 6.9+) the offset holds for this one write; on an
// older kernel, through a descriptor of the same file opened anew without
// O_APPEND. It runs as the daemon: the kernel sends a writeback as nobody's
// (uid 0), on a file the caller opened for writing.
func (f *file) writeInPlace(data [][]byte, off int64) (uint32, syscall.Errno) {
	fd, ok := f.PassthroughFd()
	if !ok {
		return 0, syscall.EBADF
	}
	n, err := unix.Pwritev2(fd, data, off, unix.RWF_NOAPPEND)
	if err == unix.EOPNOTSUPP {
		again, oerr := unix.Open(loc{dir: fd}.proc(), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if oerr != nil {
			return 0, gofs.ToErrno(oerr)
		}
		n, err = unix.Pwritev(again, data, off)
		unix.Close(again)
	}
	return uint32(n), gofs.ToErrno(err)
}

// appended gives the kernel the file's size after a write through f's
// O_APPEND descriptor that landed past off, the end the kernel knew:
// SOURCE grew the file meanwhile. The kernel takes off plus the bytes
// written as the new size (fuse_write_update_attr), short of the real end,
// and a shared map of the file, whose faults never ask for attributes,
// stops there; the watcher skips the daemon's own write. From a goroutine:
// a notification is not sent from within the request it is about.
func (f *file) appended(off int64, n uint32, errno syscall.Errno) {
	if !f.appends || errno != 0 || f.n.m.root == nil {
		return
	}
	fd, ok := f.PassthroughFd()
	var st unix.Stat_t
	if !ok || unix.Fstat(fd, &st) != nil || st.Size <= off+int64(n) {
		return
	}
	go func() {
		f.n.NotifyContent(off, 0)
		f.n.storeSize()
	}()
}

// statxSyncType is AT_STATX_SYNC_TYPE, the statx flags that choose how
// fresh the answer must be.
const statxSyncType = unix.AT_STATX_FORCE_SYNC | unix.AT_STATX_DONT_SYNC

var _ = (gofs.FileStatxer)((*file)(nil))

// Statx describes the open file by its descriptor. LoopbackFile's passes
// an empty path without AT_EMPTY_PATH (ENOENT) and the kernel's flags as
// they come; only the sync type is the caller's to choose.
func (f *file) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	fd, ok := f.PassthroughFd()
	if !ok {
		return syscall.EBADF
	}
	var x unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|int(flags)&statxSyncType, int(mask), &x)
	if err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatx(&x)
	out.SetTimeout(f.n.m.policy.Load().AttrTTL())
	return 0
}

// Waits between two tries of a lock that is held: short at first, so that
// a lock let go soon is taken soon, then no more than lockWaitMax.
const (
	lockWaitMin = time.Millisecond
	lockWaitMax = 50 * time.Millisecond
)

var _ = (gofs.FileSetlker)((*file)(nil))

// Setlk takes or lets go of a lock (POSIX or flock) without waiting; see
// Setlkw for what a lock taken does.
func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	errno := f.LoopbackFile.Setlk(ctx, owner, lk, flags)
	f.synchronized(lk, errno)
	return errno
}

// synchronized makes a lock taken a point where the mirror side sees what
// SOURCE wrote, as NFS does (close-to-open, and locks): the kernel's pages
// and attributes of the file are dropped before it is told the lock is
// hers, so that what she reads under the lock is read from SOURCE, where
// the other side wrote before letting go of it. (Writes through the mirror
// need nothing at the unlock: without a writeback cache each is on SOURCE
// before the write returns.)
//
// The notification is written from within the lock request, before its
// reply: the kernel's FUSE_NOTIFY_INVAL_INODE takes no lock the locking
// process holds (only the connection's killsb, shared, and the pages'
// locks); a page locked for a read, or a dirty mapped page it writes back
// first, waits for a READ or WRITE that go-fuse serves on another
// goroutine (it starts a reader whenever none is left waiting). Unlocks
// and failures drop nothing. It costs one write to /dev/fuse per lock
// taken, and the rereads.
func (f *file) synchronized(lk *fuse.FileLock, errno syscall.Errno) {
	// (A node outside a mounted tree, as in unit tests, has no kernel to tell.)
	if errno == 0 && lk.Typ != syscall.F_UNLCK && f.n.m.root != nil {
		f.n.NotifyContent(0, 0) // ENOENT: the kernel keeps nothing of n
	}
}

var _ = (gofs.FileSetlkwer)((*file)(nil))

// Setlkw waits for a lock (POSIX or flock, as Setlk tells them apart by
// flags) without blocking a thread: LoopbackFile's blocks one in
// fcntl(F_OFD_SETLKW) or flock(LOCK_EX) per waiter, for as long as the
// lock is held, and a waiter killed meanwhile leaves it blocked, so that
// any user could pile up threads until the daemon dies at the runtime's
// limit. Here the waiter tries without blocking and sleeps on a timer
// between tries, which holds no thread; a signal to the waiting process
// (the kernel's FUSE_INTERRUPT) cancels ctx and ends the wait with EINTR.
//
// Locks are not refused under read_only: a lock changes nothing on SOURCE,
// and it is taken on the caller's own open file, opened as her, so it is
// what she may do there (flock on a read-only file; a POSIX write lock
// only on a file open for writing, which read_only does not give).
func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	wait := lockWaitMin
	for {
		errno := f.Setlk(ctx, owner, lk, flags)
		if errno != syscall.EAGAIN && errno != syscall.EACCES {
			return errno // taken, or an error that waiting does not mend
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return syscall.EINTR
		case <-t.C:
		}
		wait = min(2*wait, lockWaitMax)
	}
}

// dirStream is what go-fuse's loopback directory stream provides.
type dirStream interface {
	gofs.FileReaddirenter
	gofs.FileSeekdirer
	gofs.FileReleasedirer
	gofs.FileFsyncdirer
}

// dir is an open directory of the mirror; it skips the entries that the
// policy in force at the open hides, so one listing follows one policy.
type dir struct {
	ds     dirStream
	n      *node
	fd     int
	policy *policy.Policy
}

// newDir opens n's folder for a listing under p.
func (n *node) newDir(p *policy.Policy) (*dir, syscall.Errno) {
	fd, errno := n.openDir()
	if errno != 0 {
		return nil, errno
	}
	ds, errno := gofs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		syscall.Close(fd)
		return nil, errno
	}
	d := &dir{ds: ds.(dirStream), n: n, fd: fd, policy: p}
	n.addHandle(d)
	return d, 0
}

var _ = (gofs.FileReaddirenter)((*dir)(nil))

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		e, errno := d.ds.Readdirent(ctx)
		if e == nil || errno != 0 || !d.n.listHides(d.policy, e) {
			return e, errno
		}
	}
}

var _ = (gofs.FileSeekdirer)((*dir)(nil))

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.ds.Seekdir(ctx, off)
}

var _ = (gofs.FileReleasedirer)((*dir)(nil))

// Releasedir closes the folder, and drops the kernel's listing of it if
// the policy changed while it was open (listing.go).
func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	d.n.dropHandle(d)
	d.ds.Releasedir(ctx, flags)
	d.n.dropListingFrom(d.policy)
}

func (d *dir) descriptor() (int, bool) { return d.fd, true }

var _ = (gofs.FileGetattrer)((*dir)(nil))

// Getattr answers a stat of the directory from its open descriptor: go-fuse
// passes an open handle along, and so a removed but open directory can be
// stat'ed, as on a plain file system.
func (d *dir) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(d.fd, &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

var _ = (gofs.FileFsyncdirer)((*dir)(nil))

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.ds.Fsyncdir(ctx, flags)
}

// Held lists what is open through the mirror: the files and folders with
// an open handle the kernel holds, by path in the mirror (at most limit of
// them; n counts them all). A file open without a name left is not found.
func (m *Mirror) Held(limit int) (paths []string, n int) {
	seen := map[*gofs.Inode]bool{}
	var walk func(in *gofs.Inode)
	walk = func(in *gofs.Inode) {
		if seen[in] {
			return
		}
		seen[in] = true
		if nd, ok := in.Operations().(*node); ok && nd.holdsHandles() {
			if n++; len(paths) < limit {
				paths = append(paths, "/"+in.Path(nil))
			}
		}
		for _, child := range in.Children() {
			walk(child)
		}
	}
	walk(m.root.EmbeddedInode())
	return paths, n
}

func (n *node) holdsHandles() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.handles) > 0
}
