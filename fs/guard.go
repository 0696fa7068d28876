package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The operations that change the mirror. Each checks the policy first:
// read_only gives EROFS; a hidden name gives ENOENT where it would have to
// exist and EPERM where it would be created (so a hidden file can be neither
// reached nor replaced through the mirror).

// guardNew checks a name about to be created in n.
func (n *node) guardNew(name string) syscall.Errno {
	p := n.m.policy.Load()
	switch {
	case p.ReadOnly:
		return syscall.EROFS
	case n.mayHide(p, name):
		return syscall.EPERM
	}
	return 0
}

// guardExisting checks an existing name in n about to be changed.
func (n *node) guardExisting(name string) syscall.Errno {
	p := n.m.policy.Load()
	switch {
	case p.ReadOnly:
		return syscall.EROFS
	case n.mayHide(p, name):
		return syscall.ENOENT
	}
	return 0
}

func (n *node) guardWrite() syscall.Errno {
	if n.m.policy.Load().ReadOnly {
		return syscall.EROFS
	}
	return 0
}

const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

var _ = (gofs.NodeOpener)((*node)(nil))

// Open refuses write access under read_only. Handles opened for writing
// before a switch to read_only keep their access, as after a chmod.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		if errno := n.guardWrite(); errno != 0 {
			return nil, 0, errno
		}
	}
	return n.open(ctx, flags)
}

var _ = (gofs.NodeCreater)((*node)(nil))

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.guardNew(name); errno != 0 {
		return nil, nil, 0, errno
	}
	inode, fh, fuseFlags, errno := n.create(ctx, name, flags, mode, out)
	setEntryTimeouts(n.m.policy.Load(), out)
	return inode, fh, fuseFlags, errno
}

var _ = (gofs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.guardNew(name); errno != 0 {
		return nil, errno
	}
	return n.mkdir(ctx, name, mode, out)
}

var _ = (gofs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.guardNew(name); errno != 0 {
		return nil, errno
	}
	return n.mknod(ctx, name, mode, dev, out)
}

var _ = (gofs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.guardNew(name); errno != 0 {
		return nil, errno
	}
	return n.symlink(ctx, target, name, out)
}

var _ = (gofs.NodeLinker)((*node)(nil))

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.guardNew(name); errno != 0 {
		return nil, errno
	}
	t, ok := target.(*node)
	if !ok || t.m != n.m {
		return nil, syscall.EXDEV
	}
	return n.link(ctx, t, name, out)
}

var _ = (gofs.NodeRenamer)((*node)(nil))

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := n.guardExisting(name); errno != 0 {
		return errno
	}
	np, ok := newParent.(*node)
	if !ok || np.m != n.m {
		return syscall.EXDEV
	}
	if errno := np.guardNew(newName); errno != 0 {
		return errno
	}
	// Moving a folder on the way to a path hidden by an anchored pattern
	// would bring the hidden entry out under another path.
	p := n.m.policy.Load()
	if p.CoversBelow(n.childRel(p, name)) || flags&unix.RENAME_EXCHANGE != 0 && p.CoversBelow(np.childRel(p, newName)) {
		return syscall.EPERM
	}
	return n.rename(ctx, name, np, newName, flags)
}

var _ = (gofs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.guardExisting(name); errno != 0 {
		return errno
	}
	return n.unlinkat(ctx, name, 0)
}

var _ = (gofs.NodeRmdirer)((*node)(nil))

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.guardExisting(name); errno != 0 {
		return errno
	}
	return n.unlinkat(ctx, name, unix.AT_REMOVEDIR)
}

var _ = (gofs.NodeSetattrer)((*node)(nil))

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.guardWrite(); errno != 0 {
		return errno
	}
	return n.setattr(ctx, f, in, out)
}

var _ = (gofs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := n.guardWrite(); errno != 0 {
		return errno
	}
	return n.setxattr(ctx, attr, data, flags)
}

var _ = (gofs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := n.guardWrite(); errno != 0 {
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

// readOnlyIoctls are the ioctls that only read; under read_only every other
// one is refused, since the loopback would run it on the source as root
// (chattr, for one, needs no more than a read-only handle).
var readOnlyIoctls = map[uint32]bool{
	unix.FS_IOC_GETFLAGS: true,
	fsIocFsgetxattr:      true,
	unix.TIOCINQ:         true, // FIONREAD
}

// fsIocFsgetxattr is FS_IOC_FSGETXATTR, _IOR('X', 31, struct fsxattr).
const fsIocFsgetxattr = 0x801c581f

func (n *node) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	if !readOnlyIoctls[cmd] {
		if errno := n.guardWrite(); errno != 0 {
			return 0, errno
		}
	}
	if fi, ok := f.(gofs.FileIoctler); ok {
		return fi.Ioctl(ctx, cmd, arg, input, output)
	}
	return 0, syscall.ENOTTY
}

var _ = (gofs.NodeTmpfiler)((*node)(nil))

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.guardWrite(); errno != 0 {
		return nil, nil, 0, errno
	}
	return n.tmpfile(ctx, flags, mode, out)
}
