package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The go-fuse node methods: what the kernel's requests call. Each reads
// the policy once, checks it (guard.go, names.go), then calls its
// operation (loopback.go, or the layer that owns it); each has its
// compile-time assertion. A method go-fuse has a default for and the
// mirror does not define is answered by go-fuse (ENOTSUP, or the file
// handle's method).

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
	n.m.showEntry(out)
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
		n.m.showAttrOut(out)
	}
	return errno
}

var _ = (gofs.NodeStatxer)((*node)(nil))

// Statx describes n, by an open file if the kernel passes one; by name it
// is refused for a hidden node, as Getattr is. Of the kernel's flags only
// the sync ones are taken: the rest say how to find the entry, and that is
// the mirror's to say.
func (n *node) Statx(ctx context.Context, f gofs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	flags &= statxSyncType
	if fx, ok := f.(gofs.FileStatxer); ok {
		errno := fx.Statx(ctx, flags, mask, out)
		if errno == 0 {
			n.m.showStatxOut(out)
		}
		return errno
	}
	p := n.m.policy.Load()
	if errno := n.hiddenErr(p); errno != 0 {
		return errno
	}
	errno := n.statxByName(flags, mask, out)
	if errno == 0 {
		out.SetTimeout(p.AttrTTL())
		n.m.showStatxOut(out)
	}
	return errno
}

var _ = (gofs.NodeStatfser)((*node)(nil))

// Statfs describes the file system that holds a node that is not hidden.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return errno
	}
	return n.statfs(out)
}

var _ = (gofs.NodeReadlinker)((*node)(nil))

// Readlink reads n's target, unless n is hidden (a symlink held open with
// O_PATH from before a reload).
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return nil, errno
	}
	return n.readlink()
}

var _ = (gofs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle opens the directory for listing. go-fuse calls it, and
// never Readdir, when a node has it (fs/bridge.go, OpenDir): the handle it
// returns filters hidden names (listing.go), so the mirror has no Readdir.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	p := n.m.policy.Load()
	if errno := n.hiddenErr(p); errno != 0 {
		return nil, 0, errno
	}
	var d *dir
	errno := n.m.asMapped(ctx, func() (errno syscall.Errno) {
		d, errno = n.newDir(p) // under a mapping, SOURCE checks her read access (idmap.go)
		return errno
	})
	if errno != 0 {
		return nil, 0, errno
	}
	return d, n.listingFlags(p), 0
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
	n.m.showEntry(out)
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
	n.m.showEntry(out)
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
	n.m.showEntry(out)
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
	n.m.showEntry(out)
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
	n.m.showEntry(out)
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
	n.m.showEntry(out)
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
	if p.CoversBelow(n.patternPath(p, name)) || flags&unix.RENAME_EXCHANGE != 0 && p.CoversBelow(np.patternPath(p, newName)) {
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
// without one, it is a change by path, refused. A chown of a mapped owner
// or group is refused (idmap.go).
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p := n.m.policy.Load()
	errno := writeErr(p)
	if errno == 0 && f == nil {
		errno = n.hiddenErr(p)
	}
	if errno == 0 {
		errno = n.m.ids.chownErr(in)
	}
	if errno != 0 {
		return errno
	}
	if errno = n.setattr(ctx, f, in, out); errno == 0 {
		n.m.setAttrTimeout(p, out)
		n.m.showAttrOut(out)
	}
	return errno
}

var _ = (gofs.NodeGetxattrer)((*node)(nil))

// Getxattr reads an extended attribute of a node that is not hidden.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return 0, errno
	}
	return n.getxattr(ctx, attr, dest)
}

var _ = (gofs.NodeListxattrer)((*node)(nil))

// Listxattr lists the extended attributes of a node that is not hidden.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if errno := n.hiddenErr(n.m.policy.Load()); errno != 0 {
		return 0, errno
	}
	return n.listxattr(ctx, dest)
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

// Ioctl runs the commands ioctl.go lists, on the open file's descriptor;
// one that changes the file is refused under read_only. go-fuse asks the
// node before the file handle, so LoopbackFile's Ioctl, which passes
// everything on, never runs.
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
	return e.runOn(ctx, h, input, output)
}

var _ = (gofs.NodeOnForgetter)((*node)(nil))

// OnForget lets go of the kept descriptor once the kernel forgets n.
func (n *node) OnForget() {
	n.forgetFolder()
}
