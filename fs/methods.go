package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var _ = (gofs.NodeLookuper)((*node)(nil))

// Lookup finds nothing in a hidden folder (a cwd or a descriptor kept
// from before a reload) and no hidden entry, by any name that reaches it.
// Each request reads the policy once and decides by that one throughout.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.hiddenErr(p); errno != 0 {
		return nil, errno
	}
	child, errno := n.lookup(ctx, name, out)
	if errno != 0 {
		return nil, errno
	}
	if n.entryHidden(p, name, isDirMode(out.Attr.Mode)) {
		return nil, syscall.ENOENT
	}
	n.m.setEntryTimeouts(p, out)
	return child, 0
}

var _ = (gofs.NodeGetattrer)((*node)(nil))

// Getattr of a hidden node is refused unless it is open (go-fuse passes
// any open file of the node along): a stat of an open file keeps working.
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	p := n.m.policy.Load()
	if f == nil {
		if errno := n.hiddenErr(p); errno != 0 {
			return errno
		}
	}
	errno := n.getattr(ctx, f, out)
	if errno == 0 {
		n.m.setAttrTimeout(p, out)
	}
	return errno
}

// Statx describes n, by an open file if the kernel passes one; by name it
// is refused for a hidden node, as Getattr is. Of the kernel's flags only
// the sync ones are taken: the rest say how to find the entry, and that is
// the mirror's to say.
func (n *node) Statx(ctx context.Context, f gofs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	flags &= unix.AT_STATX_FORCE_SYNC | unix.AT_STATX_DONT_SYNC
	if fs, ok := f.(gofs.FileStatxer); ok {
		return fs.Statx(ctx, flags, mask, out)
	}
	p := n.m.policy.Load()
	if errno := n.hiddenErr(p); errno != 0 {
		return errno
	}
	l, errno := n.locate("")
	if errno != 0 {
		return errno
	}
	defer l.done()
	var x unix.Statx_t
	if err := unix.Statx(l.dir, l.path, int(flags)|l.flags(), int(mask), &x); err != nil {
		return gone(l, gofs.ToErrno(err))
	}
	if err := n.mustBe(&x); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatx(&x)
	out.SetTimeout(p.AttrTTL())
	return 0
}

// Statfs describes the file system that holds n, through a descriptor of
// n itself (locateSelf: another file put at n's name may be on another
// file system): never through a path that follows a symlink, which would
// tell a caller whether a path she may not search exists, or make the
// daemon wait on an automount or a dead network mount.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return errno
	}
	l, errno := n.locateSelf()
	if errno != 0 {
		return errno
	}
	defer l.done()
	var s syscall.Statfs_t
	err := l.byFd(func(fd int) error { return syscall.Fstatfs(fd, &s) })
	if err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

// Readlink reads n's target, unless n is hidden (a symlink held open with
// O_PATH from before a reload): n's own, not that of a symlink put at its
// name since (locateSelf).
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return nil, errno
	}
	l, errno := n.locateSelf()
	if errno != 0 {
		return nil, errno
	}
	defer l.done()
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		got, err := unix.Readlinkat(l.dir, l.path, buf)
		if err != nil {
			return nil, gofs.ToErrno(err)
		}
		if got < size {
			return buf[:got], 0
		}
	}
}

var _ = (gofs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle opens the directory for listing. go-fuse uses this handle,
// not Readdir, when a node has one: it is where hidden names are filtered.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.hiddenErr(p); errno != 0 {
		return nil, 0, errno
	}
	fd, errno := n.openDir()
	if errno != 0 {
		return nil, 0, errno
	}
	ds, errno := gofs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		syscall.Close(fd)
		return nil, 0, errno
	}
	d := &dir{ds: ds.(dirStream), n: n, fd: fd, policy: p}
	n.opened(d)
	return d, n.listingFlags(p), 0
}

var _ = (gofs.NodeReaddirer)((*node)(nil))

// Readdir is not what go-fuse calls while OpendirHandle exists; it is
// filtered all the same, so that no path lists a hidden name.
func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	fh, _, errno := n.OpendirHandle(ctx, 0)
	if errno != 0 {
		return nil, errno
	}
	defer fh.(gofs.FileReleasedirer).Releasedir(ctx, 0)
	var list []fuse.DirEntry
	for {
		e, errno := fh.(gofs.FileReaddirenter).Readdirent(ctx)
		if errno != 0 {
			return nil, errno
		}
		if e == nil {
			return gofs.NewListDirStream(list), 0
		}
		list = append(list, *e)
	}
}

var _ = (gofs.NodeOpener)((*node)(nil))

// Open refuses write access under read_only. Handles opened for writing
// before a switch to read_only keep their access, as after a chmod. A
// hidden node is not opened, however it was reached (open_by_handle_at,
// a /proc/PID/fd link, a path kept from before a reload).
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.hiddenErr(p); errno != 0 {
		return nil, 0, errno
	}
	if flags&writeFlags != 0 {
		if errno := writeErr(p); errno != 0 {
			return nil, 0, errno
		}
	}
	return n.open(ctx, flags)
}

var _ = (gofs.NodeCreater)((*node)(nil))

// Create refuses a name whose existing entry is hidden under another
// stored name (case-insensitive folders): the create of an existing name
// opens it.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.guardNew(p, name); errno != 0 {
		return nil, nil, 0, errno
	}
	inode, fh, fuseFlags, errno := n.create(ctx, name, flags, mode, out)
	n.m.setEntryTimeouts(p, out)
	return inode, fh, fuseFlags, errno
}

var _ = (gofs.NodeTmpfiler)((*node)(nil))

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.guardNode(p); errno != 0 {
		return nil, nil, 0, errno
	}
	inode, fh, fuseFlags, errno := n.tmpfile(ctx, flags, mode, out)
	n.m.setEntryTimeouts(p, out)
	return inode, fh, fuseFlags, errno
}

var _ = (gofs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.guardNew(p, name); errno != 0 {
		return nil, errno
	}
	child, errno := n.mkdir(ctx, name, mode, out)
	n.m.setEntryTimeouts(p, out)
	return child, errno
}

var _ = (gofs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.guardNew(p, name); errno != 0 {
		return nil, errno
	}
	child, errno := n.mknod(ctx, name, mode, dev, out)
	n.m.setEntryTimeouts(p, out)
	return child, errno
}

var _ = (gofs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.guardNew(p, name); errno != 0 {
		return nil, errno
	}
	child, errno := n.symlink(ctx, target, name, out)
	n.m.setEntryTimeouts(p, out)
	return child, errno
}

var _ = (gofs.NodeLinker)((*node)(nil))

// Link gives no new name to a hidden node: a descriptor kept from before a
// reload, linked through /proc/self/fd with AT_SYMLINK_FOLLOW, arrives here
// as a link of its node.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.guardNew(p, name); errno != 0 {
		return nil, errno
	}
	t, ok := target.(*node)
	if !ok || t.m != n.m {
		return nil, syscall.EXDEV
	}
	if errno := t.hiddenErr(p); errno != 0 {
		return nil, errno
	}
	child, errno := n.link(ctx, t, name, out)
	n.m.setEntryTimeouts(p, out)
	return child, errno
}

var _ = (gofs.NodeRenamer)((*node)(nil))

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	p := n.m.policy.Load()
	if errno := n.guardExisting(p, name); errno != 0 {
		return errno
	}
	np, ok := newParent.(*node)
	if !ok || np.m != n.m {
		return syscall.EXDEV
	}
	if errno := np.guardNew(p, newName); errno != 0 {
		return errno
	}
	// Moving a folder on the way to a path hidden by an anchored pattern
	// would bring the hidden entry out under another path.
	if p.CoversBelow(n.childRel(p, name)) || flags&unix.RENAME_EXCHANGE != 0 && p.CoversBelow(np.childRel(p, newName)) {
		return syscall.EPERM
	}
	return n.rename(ctx, name, np, newName, flags)
}

var _ = (gofs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.guardExisting(n.m.policy.Load(), name); errno != 0 {
		return errno
	}
	return n.unlinkat(ctx, name, 0)
}

var _ = (gofs.NodeRmdirer)((*node)(nil))

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.guardExisting(n.m.policy.Load(), name); errno != 0 {
		return errno
	}
	return n.unlinkat(ctx, name, unix.AT_REMOVEDIR)
}

var _ = (gofs.NodeSetattrer)((*node)(nil))

// Setattr through an open handle keeps working on a node hidden since;
// without one, it is a change by path, refused.
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p := n.m.policy.Load()
	errno := writeErr(p)
	if errno == 0 && f == nil {
		errno = n.hiddenErr(p)
	}
	if errno != 0 {
		return errno
	}
	if errno = n.setattr(ctx, f, in, out); errno == 0 {
		n.m.setAttrTimeout(p, out)
	}
	return errno
}

// Getxattr reads an extended attribute, as the caller, of a node that is
// not hidden. The POSIX ACLs are read as the daemon: the kernel asks for
// them at every permission check of a folder the caller does not own (a
// round trip each time), SOURCE lets anyone who reaches an entry read them,
// and the kernel has checked the path she took to it.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return 0, errno
	}
	get := func(p string, follow bool) (int, error) {
		if follow {
			return unix.Getxattr(p, attr, dest)
		}
		return unix.Lgetxattr(p, attr, dest)
	}
	var size uint32
	var errno syscall.Errno
	if isACL(attr) {
		size, errno = n.xattrAsDaemon(get)
	} else {
		size, errno = n.xattr(ctx, get)
	}
	if errno == syscall.EOPNOTSUPP && isACL(attr) {
		// The kernel asks for the ACLs of every node it checks (EnableAcl),
		// and takes any error as the answer to the check. A SOURCE without
		// ACLs (exFAT, FAT, ...) has none: its mode bits are all there is.
		return 0, syscall.ENODATA
	}
	return size, errno
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return 0, errno
	}
	return n.xattr(ctx, func(p string, follow bool) (int, error) {
		if follow {
			return unix.Listxattr(p, dest)
		}
		return unix.Llistxattr(p, dest)
	})
}

var _ = (gofs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := n.guardNode(n.m.policy.Load()); errno != 0 {
		return errno
	}
	return n.setxattr(ctx, attr, data, flags)
}

var _ = (gofs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := n.guardNode(n.m.policy.Load()); errno != 0 {
		return errno
	}
	return n.removexattr(ctx, attr)
}

var _ = (gofs.NodeAllocater)((*node)(nil))

// Allocate (fallocate) is refused under read_only even on an old handle:
// it changes the file's size or blocks, which a write handle does not imply.
func (n *node) Allocate(ctx context.Context, f gofs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if errno := n.guardWrite(); errno != 0 {
		return errno
	}
	if a, ok := f.(gofs.FileAllocater); ok {
		return a.Allocate(ctx, off, size, mode)
	}
	return syscall.ENOTSUP
}

var _ = (gofs.NodeCopyFileRanger)((*node)(nil))

func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	if errno := n.guardWrite(); errno != 0 {
		return 0, errno
	}
	return n.copyRange(ctx, fhIn, fhOut, offIn, offOut, length, flags)
}

var _ = (gofs.NodeIoctler)((*node)(nil))

// Ioctl runs the listed commands on the open file's descriptor; see the
// comment at the top of this file. go-fuse asks the node before the file
// handle, so LoopbackFile's Ioctl, which passes everything on, never runs.
func (n *node) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	e, ok := ioctls[cmd]
	if !ok {
		return 0, syscall.ENOTTY
	}
	h, ok := f.(handle)
	if !ok {
		return 0, syscall.ENOTTY
	}
	if e.changes {
		if errno := n.guardIoctl(); errno != 0 {
			return 0, errno
		}
	}
	fd, ok := h.descriptor()
	if !ok {
		return 0, syscall.EBADF
	}
	caller, _ := fuse.FromContext(ctx)
	clear(output) // go-fuse's buffer is reused: what is not written would leak
	return e.run(ioctlCall{fd: fd, caller: caller, in: input, out: output})
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
