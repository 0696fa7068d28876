package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// The operations that change the mirror. Each reads the policy once and
// decides by that one value throughout (a reload between two checks would
// let each policy pass what the other refuses): read_only gives EROFS; a
// hidden name gives ENOENT where it would have to exist and EPERM where it
// would be created (so a hidden file can be neither reached nor replaced
// through the mirror); a hidden folder, or a hidden node kept from before
// a reload, gives ENOENT.
//
// What a reload promises for what was opened before it: a file or folder
// open then stays open, and its handle keeps working on its file, as after
// a chmod (reads, writes, fstat). Nothing new is given to a node the policy
// in force hides, whichever way the node is reached (a cwd, a descriptor
// reopened through /proc, a file handle): no lookup below it, no open, no
// stat by path, no new name (link), no entry made or removed in it.

// guardNew checks a name about to be created in n.
func (n *node) guardNew(p *policy.Policy, name string) syscall.Errno {
	switch {
	case p.ReadOnly:
		return syscall.EROFS
	case n.pathHidden(p):
		return syscall.ENOENT
	case n.entryHidden(p, name, true):
		return syscall.EPERM
	}
	return 0
}

// guardExisting checks an existing name in n about to be changed.
func (n *node) guardExisting(p *policy.Policy, name string) syscall.Errno {
	switch {
	case p.ReadOnly:
		return syscall.EROFS
	case n.pathHidden(p), n.entryHidden(p, name, true):
		return syscall.ENOENT
	}
	return 0
}

func (n *node) guardWrite() syscall.Errno { return writeErr(n.m.policy.Load()) }

func writeErr(p *policy.Policy) syscall.Errno {
	if p.ReadOnly {
		return syscall.EROFS
	}
	return 0
}

// guardNode checks a change to n itself, not through an open handle.
func (n *node) guardNode(p *policy.Policy) syscall.Errno {
	if errno := writeErr(p); errno != 0 {
		return errno
	}
	return n.hiddenErr(p)
}

const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

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
