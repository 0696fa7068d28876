package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The loopback: each operation on the source, through a loc (locate.go),
// as a *at call on a folder's descriptor and one name. The node methods
// (methods.go) check the policy before calling these.

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// statx describes the entry at dir/path; flags as for statx(2).
func statx(dir int, path string, flags int, x *unix.Statx_t) syscall.Errno {
	return gofs.ToErrno(unix.Statx(dir, path, flags|unix.AT_STATX_SYNC_AS_STAT, statxMask, x))
}

func statxAt(l loc, x *unix.Statx_t) syscall.Errno {
	return statx(l.dir, l.path, l.flags(), x)
}

func statxFd(fd int, x *unix.Statx_t) syscall.Errno {
	return statx(fd, "", unix.AT_EMPTY_PATH, x)
}

func fillAttr(x *unix.Statx_t, a *fuse.Attr) {
	a.Ino = x.Ino
	a.Size = x.Size
	a.Blocks = x.Blocks
	a.Atime, a.Atimensec = uint64(x.Atime.Sec), x.Atime.Nsec
	a.Mtime, a.Mtimensec = uint64(x.Mtime.Sec), x.Mtime.Nsec
	a.Ctime, a.Ctimensec = uint64(x.Ctime.Sec), x.Ctime.Nsec
	a.Mode = uint32(x.Mode)
	a.Nlink = x.Nlink
	a.Uid, a.Gid = x.Uid, x.Gid
	a.Rdev = uint32(unix.Mkdev(x.Rdev_major, x.Rdev_minor))
	a.Blksize = x.Blksize
}

// stableAttr is the node identity go-fuse keys inodes by: the inode number,
// with the device mixed in when it is not SOURCE's, and the birth time as
// generation, so that a reused inode number is a new node.
func (m *shared) stableAttr(x *unix.Statx_t) gofs.StableAttr {
	swap := func(d uint64) uint64 { return d<<32 | d>>32 }
	gen := uint64(1)
	if x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	dev := unix.Mkdev(x.Dev_major, x.Dev_minor)
	return gofs.StableAttr{Mode: uint32(x.Mode), Gen: gen, Ino: swap(dev) ^ swap(m.dev) ^ x.Ino}
}

func (n *node) newChild(ctx context.Context, x *unix.Statx_t, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(x, &out.Attr)
	id := n.m.stableAttr(x)
	out.Attr.Ino = id.Ino // differs from x.Ino on a mount within SOURCE
	return n.NewInode(ctx, &node{m: n.m}, id)
}

func (n *node) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l, errno := n.locate(name)
	if errno != 0 {
		return nil, errno
	}
	defer l.done()
	var x unix.Statx_t
	// Under a mapping, SOURCE checks that she may search the folder
	// (idmap.go): the kernel checked only what the mirror shows.
	if errno := n.m.asMapped(ctx, func() syscall.Errno { return statxAt(l, &x) }); errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, &x, out), 0
}

func (n *node) getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fg, ok := f.(gofs.FileGetattrer); ok {
		return fg.Getattr(ctx, out)
	}
	l, errno := n.locate("")
	if errno != 0 {
		return errno
	}
	defer l.done()
	var x unix.Statx_t
	if errno := statxAt(l, &x); errno != 0 {
		return gone(l, errno)
	}
	if err := n.mustBe(&x); err != nil {
		return gofs.ToErrno(err) // the attributes of another file are not n's
	}
	fillAttr(&x, &out.Attr)
	out.Ino = n.StableAttr().Ino // differs from x.Ino on a mount within SOURCE
	return 0
}

// made makes an entry with mk at name, as the caller (so it is born hers,
// with the group a setgid folder hands down, and nothing is given away by
// name afterwards), and describes it; if that fails, the entry is removed
// again (unlinkat with rm), as the caller too.
func (n *node) made(ctx context.Context, name string, out *fuse.EntryOut, rm int, mk func(loc) error) (*gofs.Inode, syscall.Errno) {
	l, errno := n.locate(name)
	if errno != 0 {
		return nil, errno
	}
	defer l.done()
	var x unix.Statx_t
	errno = n.m.asCaller(ctx, func() syscall.Errno {
		if err := mk(l); err != nil {
			return gofs.ToErrno(err)
		}
		errno := statxAt(l, &x)
		if errno != 0 {
			unix.Unlinkat(l.dir, l.path, rm)
		}
		return errno
	})
	if errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, &x, out), 0
}

func (n *node) mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	mode = n.masked(ctx, mode)
	return n.made(ctx, name, out, 0, func(l loc) error { return unix.Mknodat(l.dir, l.path, mode, int(dev)) })
}

func (n *node) mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	mode = n.masked(ctx, mode)
	return n.made(ctx, name, out, unix.AT_REMOVEDIR, func(l loc) error { return unix.Mkdirat(l.dir, l.path, mode) })
}

func (n *node) symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.made(ctx, name, out, 0, func(l loc) error { return unix.Symlinkat(target, l.dir, l.path) })
}

// create makes and opens a file. The kernel asks only for a name it found
// missing; one made on the source since is opened as it is (O_EXCL tells
// which), not given to the caller, and a symlink there is not followed.
func (n *node) create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return n.openNew(ctx, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, n.masked(ctx, mode), out, flags&unix.O_EXCL == 0)
}

// tmpfile makes an unnamed file in n.
func (n *node) tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return n.openNew(ctx, "", flags|unix.O_TMPFILE, n.masked(ctx, mode), out, false)
}

// openNew opens name in n with flags that make a new file, as the caller;
// if mayExist, an existing file is opened instead.
func (n *node) openNew(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut, mayExist bool) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	l, errno := n.locate(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer l.done()
	fd, made := -1, false
	errno = n.m.asCaller(ctx, func() syscall.Errno {
		var err error
		fd, err = unix.Openat(l.dir, l.path, int(flags)|unix.O_CLOEXEC, mode)
		made = err == nil
		if err == unix.EEXIST && mayExist {
			fd, err = openNoSymlinks(l, int(flags&^(unix.O_CREAT|unix.O_EXCL)))
		}
		return gofs.ToErrno(err)
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	var x unix.Statx_t
	if errno := statxFd(fd, &x); errno != 0 {
		unix.Close(fd)
		if made && l.path != "" {
			n.m.asCaller(ctx, func() syscall.Errno { return gofs.ToErrno(unix.Unlinkat(l.dir, l.path, 0)) })
		}
		return nil, nil, 0, errno
	}
	child := n.newChild(ctx, &x, out)
	f := child.Operations().(*node).newFile(fd)
	f.appends = flags&unix.O_APPEND != 0
	return child, f, n.m.openFlags(&x, fd, flags), 0
}

func (n *node) link(ctx context.Context, target *node, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	from, errno := target.locateSelf() // the target's file, not what has its name now
	if errno != 0 {
		return nil, errno
	}
	defer from.done()
	l, errno := n.locate(name)
	if errno != 0 {
		return nil, errno
	}
	defer l.done()
	errno = n.m.asCaller(ctx, func() syscall.Errno {
		if from.path == "" {
			// An open file in no folder, as an O_TMPFILE one: by its descriptor.
			return gofs.ToErrno(unix.Linkat(unix.AT_FDCWD, from.proc(), l.dir, l.path, unix.AT_SYMLINK_FOLLOW))
		}
		return gofs.ToErrno(unix.Linkat(from.dir, from.path, l.dir, l.path, 0))
	})
	if errno != 0 {
		return nil, errno
	}
	var x unix.Statx_t
	if errno := statxAt(l, &x); errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, &x, out), 0
}

func (n *node) unlinkat(ctx context.Context, name string, flags int) syscall.Errno {
	l, errno := n.locate(name)
	if errno != 0 {
		return errno
	}
	defer l.done()
	return n.m.asCaller(ctx, func() syscall.Errno { return gofs.ToErrno(unix.Unlinkat(l.dir, l.path, flags)) })
}

func (n *node) rename(ctx context.Context, name string, to *node, newName string, flags uint32) syscall.Errno {
	a, errno := n.locate(name)
	if errno != 0 {
		return errno
	}
	defer a.done()
	b, errno := to.locate(newName)
	if errno != 0 {
		return errno
	}
	defer b.done()
	return n.m.asCaller(ctx, func() syscall.Errno {
		return gofs.ToErrno(unix.Renameat2(a.dir, a.path, b.dir, b.path, uint(flags)))
	})
}

// open opens n's file, as the caller. Its path is resolved without
// following any symlink: a folder swapped for one on the source cannot lead
// elsewhere. What is opened by n's name must be n's file (a node is its
// file, not its name): a file put at the name on SOURCE since is ESTALE,
// and the kernel looks the name up again and opens it as a new node.
//
// O_APPEND is kept on the daemon's descriptor: the kernel sends an append
// at the end it knows, its cached size, which is short of the real end
// once SOURCE has grown the file; a write on an O_APPEND descriptor goes to
// the real end whatever the offset (pwrite(2), Linux). The mirror has no
// writeback cache, so no write at an offset of the kernel's own choosing
// comes through this descriptor (see openFlags for mmap).
func (n *node) open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	l, errno := n.locateFor(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	defer l.done()
	flags &^= fuse.FMODE_EXEC
	fd := -1
	errno = n.m.asCaller(ctx, func() syscall.Errno {
		var err error
		fd, err = openNoSymlinks(l, int(flags))
		return gone(l, gofs.ToErrno(err))
	})
	if errno != 0 {
		return nil, 0, errno
	}
	var x unix.Statx_t
	errno = statxFd(fd, &x)
	if errno == 0 {
		errno = gofs.ToErrno(n.mustBe(&x))
	}
	if errno != 0 {
		unix.Close(fd)
		return nil, 0, errno
	}
	f := n.newFile(fd)
	f.appends = flags&unix.O_APPEND != 0
	return f, n.m.openFlags(&x, fd, flags), 0
}

func openNoSymlinks(l loc, flags int) (int, error) {
	if l.path == "" {
		// Reopened, as through /proc on a plain file system. The link is
		// /proc's, not the file's: O_NOFOLLOW (the caller's, for the file,
		// which is no symlink) would refuse it.
		return unix.Open(l.proc(), flags&^unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	how := unix.OpenHow{Flags: uint64(flags) | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(l.dir, l.path, &how)
	if err == unix.ENOSYS {
		fd, err = unix.Openat(l.dir, l.path, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// localFs are the file systems where closing one descriptor of a file does
// nothing that the file's other descriptors or users see. The loopback's
// FLUSH (at every close) only closes a copy of the descriptor, so on these
// the kernel is told not to send it (FOPEN_NOFLUSH): a round trip less per
// close. On others (NFS, CIFS, FUSE, ...) a close writes back and reports
// errors, and FLUSH stays.
var localFs = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true, // also ext2 and ext3
	unix.XFS_SUPER_MAGIC:   true,
	unix.BTRFS_SUPER_MAGIC: true,
	unix.TMPFS_MAGIC:       true,
	unix.F2FS_SUPER_MAGIC:  true,
}

// openFlags are the FOPEN_ flags for the file x, open at fd with flags.
//
// An appending open is FOPEN_DIRECT_IO (unless passthrough serves it:
// there the kernel writes the file itself, at its real end, and the flag is
// dropped, passthroughWins). Its writes go to the daemon without filling the kernel's page
// cache: the kernel would fill it at the offset it believes is the end, and
// the bytes there are SOURCE's when SOURCE appended meanwhile; the kernel
// drops the cached size after each write, and a later read then sees the
// real one. A direct-IO descriptor is mapped shared as any other
// (FUSE_DIRECT_IO_ALLOW_MMAP, mount.go); the map's pages come back through
// it, and those writes go in place (writeInPlace), not at the end.
func (m *shared) openFlags(x *unix.Statx_t, fd int, flags uint32) uint32 {
	var f uint32
	if m.isLocalFs(x, fd) {
		f |= fuse.FOPEN_NOFLUSH
	}
	if flags&unix.O_APPEND != 0 && flags&unix.O_ACCMODE != unix.O_RDONLY {
		f |= fuse.FOPEN_DIRECT_IO
	}
	return f
}

// isLocalFs says whether x, open at fd, is on one of localFs. The answer
// is kept per device: an open costs no statfs, only the statx that checks
// what it opened.
func (m *shared) isLocalFs(x *unix.Statx_t, fd int) bool {
	dev := unix.Mkdev(x.Dev_major, x.Dev_minor)
	if local, ok := m.localDevs.Load(dev); ok {
		return local.(bool)
	}
	var s unix.Statfs_t
	if unix.Fstatfs(fd, &s) != nil {
		return false
	}
	m.localDevs.Store(dev, localFs[s.Type])
	return localFs[s.Type]
}

// openDir opens n's folder for reading.
func (n *node) openDir() (int, syscall.Errno) {
	l, errno := n.locate("")
	if errno != 0 {
		return -1, errno
	}
	defer l.done()
	if l.path == "" { // a removed folder, still open: reopened
		fd, err := unix.Open(l.proc(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return fd, gofs.ToErrno(err)
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		err = n.isFile(fd) // opened by name, as root: not anyone's folder put there since
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}
	return fd, gofs.ToErrno(err)
}

// setattr carries out a SETATTR with the caller's credentials. One thing
// she asks for cannot be done with them: when she writes to a set-id file
// she does not own, the kernel asks to clear its set-id bits, and only the
// owner (or CAP_FSETID) may chmod. That alone is done as root, on an open
// descriptor of this very file (never by name: a name can be swapped for
// root's file meanwhile), and only if it clears set-id bits and nothing
// else.
func (n *node) setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	errno := n.setattrAsCaller(ctx, f, in, out)
	mode, ok := in.GetMode()
	// Under a mapping the kernel lets the shown owner ask for any chmod,
	// not only the clearing a write of hers implies: nothing as root then.
	if errno != syscall.EPERM || !ok || n.m.euid != 0 || n.m.mapped(ctx) {
		return errno
	}
	if errno := n.clearSetID(mode, out); errno != 0 {
		return errno
	}
	rest := *in
	rest.Valid &^= fuse.FATTR_MODE
	if rest.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) == 0 {
		return 0
	}
	return n.setattrAsCaller(ctx, f, &rest, out)
}

// setattrAsCaller makes the changes in asks for with the caller's
// credentials: by the open file f if there is one (which describes it
// too), else on a descriptor of n's own file (locateSelf), for root's
// requests too: a file put at n's name on SOURCE since gets ESTALE, never
// the change (the kernel looks the name up again and retries a chmod,
// truncate, chown or utimes by name; one through a descriptor of the old
// file fails). That costs an O_PATH open, a statx and a close; the chmod
// and truncate, which go through /proc, would open one anyway.
func (n *node) setattrAsCaller(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if fa, ok := f.(gofs.FileSetattrer); ok {
		return n.m.asCaller(ctx, func() syscall.Errno { return fa.Setattr(ctx, in, out) })
	}
	l, errno := n.locateSelf() // as the daemon: she need not search go-fuse's parent
	if errno != 0 {
		return errno
	}
	defer l.done()
	return n.m.asCaller(ctx, func() syscall.Errno { return setattrDescribe(l, in, out) })
}

// clearSetID sets mode on n's file through a descriptor of one of its open
// files, if mode is the file's mode less some set-id bits (EPERM
// otherwise), and describes the file in out.
func (n *node) clearSetID(mode uint32, out *fuse.AttrOut) syscall.Errno {
	l, errno := n.openLoc()
	if errno != 0 {
		return syscall.EPERM
	}
	defer l.done()
	var st unix.Stat_t
	if err := unix.Fstat(l.dir, &st); err != nil {
		return gofs.ToErrno(err)
	}
	if !dropsSetID(st.Mode, mode) {
		return syscall.EPERM
	}
	if err := unix.Fchmod(l.dir, mode&0o7777); err != nil {
		return gofs.ToErrno(err)
	}
	var x unix.Statx_t
	if errno := statxFd(l.dir, &x); errno != 0 {
		return errno
	}
	fillAttr(&x, &out.Attr)
	out.Ino = n.StableAttr().Ino
	return 0
}

// dropsSetID says whether mode is a regular file's mode now, less some of
// its setuid and setgid bits and nothing else.
func dropsSetID(now, mode uint32) bool {
	const setID = unix.S_ISUID | unix.S_ISGID
	if now&unix.S_IFMT != unix.S_IFREG || mode&^0o7777 != 0 && mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	now, mode = now&0o7777, mode&0o7777
	return mode != now && mode&^now == 0 && (now^mode)&^setID == 0
}

// setattrDescribe makes the changes in asks for at l and describes the
// entry in out.
func setattrDescribe(l loc, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := setattrAt(l, in); errno != 0 {
		return errno
	}
	var x unix.Statx_t
	if errno := statxAt(l, &x); errno != 0 {
		return errno
	}
	fillAttr(&x, &out.Attr)
	return 0
}

// setattrAt changes what in asks for, in the order chmod, chown, truncate,
// times: a truncate moves mtime, and an explicit mtime must win.
func setattrAt(l loc, in *fuse.SetAttrIn) syscall.Errno {
	if mode, ok := in.GetMode(); ok {
		err := l.byInode(func(fd int, p string) error {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return unix.EOPNOTSUPP // as fchmodat(AT_SYMLINK_NOFOLLOW)
			}
			return unix.Chmod(p, mode)
		})
		if err != nil {
			return gofs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		suid, sgid := -1, -1
		if uok {
			suid = int(uid)
		}
		if gok {
			sgid = int(gid)
		}
		if err := unix.Fchownat(l.dir, l.path, suid, sgid, l.flags()); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if size, ok := in.GetSize(); ok {
		if err := l.byInode(func(_ int, p string) error { return unix.Truncate(p, int64(size)) }); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{
			timespec(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec),
			timespec(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec),
		}
		var err error
		if l.path == "" {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, l.proc(), ts, 0)
		} else {
			err = unix.UtimesNanoAt(l.dir, l.path, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return gofs.ToErrno(err)
		}
	}
	return 0
}

// timespec is one time of a SETATTR for utimensat: the kernel's own
// UTIME_NOW and UTIME_OMIT, so that "now" is the source file system's.
func timespec(valid, set, now uint32, sec uint64, nsec uint32) unix.Timespec {
	switch {
	case valid&set == 0:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	case valid&now != 0:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// xattr runs call on a path to n, as the caller (reading too: as root, the
// trusted.* attributes would be read and listed for anyone); follow says
// whether the path is a /proc link to n, to be followed, or n's own name,
// not to be. The path is that of a descriptor of n's own file (locateSelf),
// for root's requests too: the attributes of a file put at n's name since
// are not n's to read or change (ESTALE; the kernel retries a call by
// name after a fresh lookup). That costs an O_PATH open, a statx and a
// close more than a path through n's folder.
func (n *node) xattr(ctx context.Context, call func(path string, follow bool) (int, error)) (uint32, syscall.Errno) {
	l, errno := n.locateSelf()
	if errno != 0 {
		return 0, errno
	}
	defer l.done()
	var size int
	errno = n.m.asCaller(ctx, func() syscall.Errno {
		var err error
		size, err = call(l.proc(), l.path == "")
		return gofs.ToErrno(err)
	})
	return uint32(size), errno
}

// xattrAsDaemon runs call on a path to n's own file with the daemon's
// credentials.
func (n *node) xattrAsDaemon(call func(path string, follow bool) (int, error)) (uint32, syscall.Errno) {
	l, errno := n.locateSelf()
	if errno != 0 {
		return 0, errno
	}
	defer l.done()
	size, err := call(l.proc(), l.path == "")
	return uint32(size), gofs.ToErrno(err)
}

// isACL says whether attr is one of the POSIX ACLs, which the kernel reads
// for its own permission checks.
func isACL(attr string) bool {
	return attr == "system.posix_acl_access" || attr == "system.posix_acl_default"
}

func (n *node) setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	_, errno := n.xattr(ctx, func(p string, follow bool) (int, error) {
		if follow {
			return 0, unix.Setxattr(p, attr, data, int(flags))
		}
		return 0, unix.Lsetxattr(p, attr, data, int(flags))
	})
	return errno
}

func (n *node) removexattr(ctx context.Context, attr string) syscall.Errno {
	_, errno := n.xattr(ctx, func(p string, follow bool) (int, error) {
		if follow {
			return 0, unix.Removexattr(p, attr)
		}
		return 0, unix.Lremovexattr(p, attr)
	})
	return errno
}

// copyRange copies between two open files of the mirror, on the source, as
// the caller: the blocks it takes are hers.
func (n *node) copyRange(ctx context.Context, in, out gofs.FileHandle, offIn, offOut, length, flags uint64) (uint32, syscall.Errno) {
	fin, ok1 := in.(gofs.FilePassthroughFder)
	fout, ok2 := out.(gofs.FilePassthroughFder)
	if !ok1 || !ok2 {
		return 0, syscall.ENOTSUP
	}
	fdIn, ok1 := fin.PassthroughFd()
	fdOut, ok2 := fout.PassthroughFd()
	if !ok1 || !ok2 {
		return 0, syscall.EBADF
	}
	oi, oo := int64(offIn), int64(offOut)
	var count int
	errno := n.m.asCaller(ctx, func() syscall.Errno {
		var err error
		count, err = unix.CopyFileRange(fdIn, &oi, fdOut, &oo, int(length), int(flags))
		return gofs.ToErrno(err)
	})
	return uint32(count), errno
}

// statxByName describes n's file, found by its folder and name: the
// attributes of another file put at the name since are not n's (mustBe).
func (n *node) statxByName(flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
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
	return 0
}

// statfs describes the file system that holds n, through a descriptor of
// n itself (locateSelf: another file put at n's name may be on another
// file system): never through a path that follows a symlink, which would
// tell a caller whether a path she may not search exists, or make the
// daemon wait on an automount or a dead network mount.
func (n *node) statfs(out *fuse.StatfsOut) syscall.Errno {
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

// readlink reads n's own target, not that of a symlink put at its name
// since (locateSelf).
func (n *node) readlink() ([]byte, syscall.Errno) {
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

// getxattr reads an extended attribute, as the caller. The POSIX ACLs are
// read as the daemon: the kernel asks for them at every permission check
// of a folder the caller does not own (a round trip each time), SOURCE
// lets anyone who reaches an entry read them, and the kernel has checked
// the path she took to it.
func (n *node) getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
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

// listxattr lists the extended attributes, as the caller.
func (n *node) listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return n.xattr(ctx, func(p string, follow bool) (int, error) {
		if follow {
			return unix.Listxattr(p, dest)
		}
		return unix.Llistxattr(p, dest)
	})
}
