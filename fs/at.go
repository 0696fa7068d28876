package fs

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Every operation names its entry by the descriptor of the folder holding
// it and one name, never by SOURCE's path joined to the entry's: that path
// can be longer than PATH_MAX where the entry's own is not, and a path is
// resolved anew at each call, through symlinks a folder may have been
// swapped for. The mirror holds a descriptor of SOURCE for its whole life,
// and each folder's node keeps one of its folder (acquire); past maxKept,
// a folder is opened by its path from SOURCE instead (walk).

// maxRel is the longest folder path given to the kernel in one piece.
const maxRel = unix.PathMax - 1

// loc is where an entry is: a folder's descriptor and a path below it, or,
// with path "", a descriptor of the entry itself (an open file no folder
// holds any more).
type loc struct {
	dir  int
	path string
	ref  *dirRef // the reference to dir this loc holds, if any: done releases it
}

// flags are the *at flags that name the entry itself, not a symlink's target.
func (l loc) flags() int {
	if l.path == "" {
		return unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

func (l loc) done() {
	if l.ref != nil {
		l.ref.release()
	}
}

// proc is l as a single path, for the calls that take no folder descriptor
// (truncate, the xattr calls): the kernel resolves /proc/self/fd/N to what
// the descriptor is, so the path stays short. With path "", it is a link
// to be followed to the entry.
func (l loc) proc() string {
	if l.path == "" {
		return "/proc/self/fd/" + strconv.Itoa(l.dir)
	}
	return "/proc/self/fd/" + strconv.Itoa(l.dir) + "/" + l.path
}

// relPath is n's path from the mirror's root ("" for the root), and false
// when n is in no folder any more (removed, or made with O_TMPFILE).
func (n *node) relPath() (string, bool) {
	var names []string
	for in := n.EmbeddedInode(); in != n.m.root; {
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		names = append(names, name)
		in = parent
	}
	slices.Reverse(names)
	return strings.Join(names, "/"), true
}

// locate finds the entry name of n, or n itself when name is "": by the
// kept descriptor of the folder that holds it and one name. A node in no
// folder is found through one of its open files, if any.
func (n *node) locate(name string) (loc, syscall.Errno) {
	if name == "" && n.EmbeddedInode() == n.m.root {
		return loc{dir: n.m.rootFd, path: "."}, 0
	}
	holder := n
	if name == "" {
		var parent *gofs.Inode
		name, parent = n.Parent()
		if parent == nil {
			return n.openLoc()
		}
		holder = parent.Operations().(*node)
	}
	r, errno := holder.acquire()
	if errno == 0 {
		return loc{dir: r.fd, path: name, ref: r}, 0
	}
	if errno != syscall.EMFILE && errno != syscall.ENFILE {
		return loc{}, errno
	}
	return holder.locateByPath(name) // out of descriptors: walk from the root
}

// locateFor finds n itself for an open by ctx's caller. For a request
// carried out with her credentials (creds.go) it is a descriptor of n's
// file (locateSelf), not a name in a folder: the folder go-fuse keeps as
// n's parent is one of the file's names, not necessarily the one she came
// by (a hard link), and she may not search it, while the kernel has
// checked the path she took. Root's opens keep the cheaper name: open
// checks what it opened (mustBe) with the statx it makes anyway.
func (n *node) locateFor(ctx context.Context) (loc, syscall.Errno) {
	if n.m.switches(ctx) {
		return n.locateSelf()
	}
	return n.locate("")
}

// locateSelf opens (O_PATH, as the daemon) the file n is, and checks it is
// still that file: a name swapped on SOURCE for another file gives ESTALE,
// never the other file.
func (n *node) locateSelf() (loc, syscall.Errno) {
	l, errno := n.locate("")
	if errno != 0 || l.path == "" {
		return l, errno
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	l.done()
	if err != nil {
		return loc{}, gone(l, gofs.ToErrno(err))
	}
	if err := n.isFile(fd); err != nil {
		unix.Close(fd)
		return loc{}, gofs.ToErrno(err)
	}
	return opened(fd), 0
}

// locateByPath finds the entry name of n by its path from the root.
func (n *node) locateByPath(name string) (loc, syscall.Errno) {
	rel, ok := n.relPath()
	if !ok && name == "" {
		return n.openLoc()
	}
	if !ok {
		return loc{}, syscall.ENOENT
	}
	if rel != "" {
		rel += "/"
	}
	return n.m.walk(rel + name)
}

// dirRef is a descriptor (O_PATH) of a folder of SOURCE, kept by the
// folder's node while the kernel knows the node: it follows the folder
// through renames, and no path is resolved again below it. refs counts its
// holders, the node included; the last one closes it.
type dirRef struct {
	fd   int
	refs atomic.Int32
}

// opened is the only reference to fd, opened for one loc.
func opened(fd int) loc {
	r := &dirRef{fd: fd}
	r.refs.Store(1)
	return loc{dir: fd, ref: r}
}

func (r *dirRef) release() {
	if r.refs.Add(-1) == 0 {
		unix.Close(r.fd)
	}
}

// maxKept bounds the folders kept open, so that a walk over a huge tree
// cannot take every descriptor the process may have; past it, folders are
// reached by path.
const maxKept = 1 << 16

// acquire returns a held reference to n's folder descriptor, opening it
// from its parent's, name by name, if n keeps none.
func (n *node) acquire() (*dirRef, syscall.Errno) {
	if n.EmbeddedInode() == n.m.root {
		n.m.rootRef.refs.Add(1)
		return n.m.rootRef, 0
	}
	for {
		r := n.kept.Load()
		if r == nil {
			break
		}
		if c := r.refs.Load(); c > 0 && r.refs.CompareAndSwap(c, c+1) {
			return r, 0
		}
	}
	name, parent := n.Parent()
	if parent == nil {
		return nil, syscall.ENOENT
	}
	if n.m.kept.Add(1) > maxKept {
		n.m.kept.Add(-1)
		return nil, syscall.EMFILE
	}
	pr, errno := parent.Operations().(*node).acquire()
	if errno != 0 {
		n.m.kept.Add(-1)
		return nil, errno
	}
	fd, err := unix.Openat(pr.fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	pr.release()
	if err == nil {
		err = n.isFile(fd)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		n.m.kept.Add(-1)
		return nil, gofs.ToErrno(err)
	}
	r := &dirRef{fd: fd}
	r.refs.Store(2) // the node's and the caller's
	if !n.kept.CompareAndSwap(nil, r) {
		unix.Close(fd) // another request kept one first
		n.m.kept.Add(-1)
		return n.acquire()
	}
	n.m.watch.add(n, fd)
	return r, 0
}

// isFile says whether fd, opened by n's parent and name, is n's own file:
// a node is its file, not its name. Another folder put at the name since
// (in a shared folder, anyone's 0700 one) is not n: ESTALE, and the kernel
// looks the name up again.
func (n *node) isFile(fd int) error {
	var x unix.Statx_t
	if errno := statxFd(fd, &x); errno != 0 {
		return errno
	}
	return n.mustBe(&x)
}

// mustBe says (ESTALE) whether x, found by n's parent and name, describes
// another file than n's: what a statx returns is enough, no call more. The
// generation (birth time) is compared where x has one: a statx asked for
// fewer fields than the node was made from may lack it.
func (n *node) mustBe(x *unix.Statx_t) error {
	if n.EmbeddedInode() == n.m.root {
		return nil
	}
	got, want := n.m.stableAttr(x), n.StableAttr()
	if got.Ino != want.Ino || x.Mask&unix.STATX_BTIME != 0 && got.Gen != want.Gen {
		return unix.ESTALE
	}
	return nil
}

// gone is the answer for n's own name missing on SOURCE, or another
// file's there (ESTALE): the kernel, which still has the name, looks it up
// again (LOOKUP_REVAL) and retries the open or stat once, so that the
// caller gets what is there now — nothing, or the new file as a new node —
// and a descriptor held on n keeps its own file. ENOENT would tell her that
// a name the kernel has just shown her does not exist.
func gone(l loc, errno syscall.Errno) syscall.Errno {
	if errno == syscall.ENOENT && l.path != "" {
		return syscall.ESTALE
	}
	return errno
}

var _ = (gofs.NodeOnForgetter)((*node)(nil))

// OnForget lets go of the kept descriptor once the kernel forgets n.
func (n *node) OnForget() {
	if r := n.kept.Swap(nil); r != nil {
		n.m.kept.Add(-1)
		n.m.watch.remove(n, r.fd) // while r.fd is still open
		r.release()
	}
}

// walk locates rel, a path below SOURCE: it opens the folder that holds
// the entry, following no symlink on the way (a folder swapped for a
// symlink on the source, or by a concurrent request, must not lead root
// elsewhere), and leaves one name to the call. A folder path too long to be
// given in one piece is opened a piece at a time.
func (m *shared) walk(rel string) (loc, syscall.Errno) {
	cut := strings.LastIndexByte(rel, '/')
	if cut < 0 {
		return loc{dir: m.rootFd, path: rel}, 0
	}
	l := loc{dir: m.rootFd}
	for dir := rel[:cut]; dir != ""; {
		piece := dir
		if len(piece) > maxRel {
			piece = piece[:strings.LastIndexByte(piece[:maxRel+1], '/')]
		}
		fd, err := openBeneath(l.dir, piece)
		l.done()
		if err != nil {
			return loc{}, gofs.ToErrno(err)
		}
		l = opened(fd)
		dir = strings.TrimPrefix(dir[len(piece):], "/")
	}
	l.path = rel[cut+1:]
	return l, 0
}

// openBeneath opens the folder path below dir (O_PATH), following no
// symlink and not leaving dir; without openat2 (Linux < 5.6), as openat.
func openBeneath(dir int, path string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH}
	fd, err := unix.Openat2(dir, path, &how)
	for try := 0; err == unix.EAGAIN && try < 3; try++ { // a rename raced the check for escapes
		fd, err = unix.Openat2(dir, path, &how)
	}
	if err == unix.ENOSYS {
		fd, err = unix.Openat(dir, path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// byInode runs call on a /proc path that names the entry at l itself, for
// the calls that follow a symlink at the end of their path (chmod,
// truncate): a symlink put at the name does not lead them elsewhere.
func (l loc) byInode(call func(fd int, path string) error) error {
	if l.path == "" {
		return call(l.dir, l.proc())
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return call(fd, "/proc/self/fd/"+strconv.Itoa(fd))
}

// byFd runs call on a descriptor (O_PATH) of the entry at l itself, never
// a symlink's target.
func (l loc) byFd(call func(fd int) error) error {
	if l.path == "" {
		return call(l.dir)
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return call(fd)
}

// Each node keeps a list of its open files and folders: once no folder
// holds the node, they are the only way to it, and the kernel still asks
// for a chmod, a utimens or an xattr of it by node.
type handle interface {
	descriptor() (int, bool)
}

func (n *node) opened(h handle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handles = append(n.handles, h)
	if f, ok := h.(*file); ok {
		if fd, ok := f.PassthroughFd(); ok {
			n.m.watch.addFile(n, fd) // under n.mu: in step with closing
		}
	}
}

// closing takes h off the list, before it is closed: openLoc never copies
// a descriptor that is closing.
func (n *node) closing(h handle) {
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
	appends bool // its descriptor is O_APPEND (loopback.go, writeInPlace)
}

func (n *node) newFile(fd int) *file {
	f := &file{LoopbackFile: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), n: n}
	n.opened(f)
	return f
}

func (f *file) descriptor() (int, bool) { return f.PassthroughFd() }

var _ = (gofs.FileReleaser)((*file)(nil))

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.n.closing(f)
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

// openLoc locates n through a copy of an open file's descriptor.
func (n *node) openLoc() (loc, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.handles {
		if fd, ok := h.descriptor(); ok {
			dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return loc{}, gofs.ToErrno(err)
			}
			return opened(dup), 0
		}
	}
	return loc{}, syscall.ENOENT
}
