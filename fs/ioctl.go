package fs

// The ioctls of the mirror.
//
// An ioctl reaches the daemon as a command number, the caller's raw
// argument word and, for commands whose number encodes a direction and a
// size, copies of the caller's buffer made by the kernel. The daemon runs
// it as root, on its own descriptor of the file. A loopback that passes
// every command on therefore gives every user of the mirror root's power
// over SOURCE's whole file system: commands that need CAP_SYS_ADMIN
// (relabelling it, shutting it down) succeed because the daemon has it,
// whatever the caller's rights and whether or not the mirror is mounted
// read-only, since the kernel knows nothing of most commands' meaning.
//
// So only the commands listed in ioctls run; any other gives ENOTTY, as
// on a file system that does not know it, under any policy and mount.
// An entry acts on the open file's descriptor with data the daemon holds:
//
//   - never the caller's argument word: a pointer in it, or in a buffer
//     (XFS_IOC_FSBULKSTAT's), is an address in the caller's memory, and
//     the kernel would read and write the daemon's memory there instead;
//   - never a descriptor number from the caller (EXT4_IOC_MOVE_EXT's
//     donor_fd): the kernel looks it up in the daemon's table, where every
//     file that any user holds open through the mirror has a number;
//   - the kernel's copies only as plain data of the size the command's
//     real argument has, read and written by the daemon, never handed to
//     the kernel as a buffer of the size the caller's command claims.
//
// To add an entry: the command's argument must be plain data (no pointer,
// no descriptor, no length that the kernel trusts); its effect must be one
// the caller could have on SOURCE directly, so check here what the kernel
// would check there against the caller's uid (Caller), not the daemon's;
// mark it changes if it changes anything, so read_only and an -o ro mount
// refuse it; and add it to the table test in ioctl_test.go and to the
// list in README's Security section.

import (
	"context"
	"encoding/binary"
	"syscall"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ioctlCall is one ioctl as a handler sees it: the daemon's descriptor of
// the open file, who asked, and the kernel's copies of the caller's buffer
// (in) and of what goes back to the caller (out, zeroed).
type ioctlCall struct {
	fd      int
	caller  *fuse.Caller
	in, out []byte
}

// ioctlEntry is how the mirror runs one command.
type ioctlEntry struct {
	changes bool // refused under read_only and on a read-only mount
	run     func(c ioctlCall) (int32, syscall.Errno)
}

// ioctls are the commands the mirror runs; see the comment above.
var ioctls = map[uint32]ioctlEntry{
	unix.TIOCINQ:         {run: fionread}, // FIONREAD
	unix.FS_IOC_GETFLAGS: {run: getFlags},
	fsIocFsgetxattr:      {run: fsGetXattr},
	unix.FS_IOC_SETFLAGS: {changes: true, run: setFlags},
	// FS_IOC_FSSETXATTR is left out: besides the flags it sets extent
	// size hints, the realtime and DAX bits and the project id (a quota
	// decision), whose checks the file system makes against the daemon's
	// capabilities, not the caller's.
}

// fsIocFsgetxattr is FS_IOC_FSGETXATTR, _IOR('X', 31, struct fsxattr).
const fsIocFsgetxattr = 0x801c581f

// runOn runs e on h's descriptor, for the caller of ctx. Its output
// buffer is go-fuse's, reused: it is cleared first, or what e does not
// write would leak an earlier request's data.
func (e ioctlEntry) runOn(ctx context.Context, h handle, input, output []byte) (int32, syscall.Errno) {
	fd, ok := h.descriptor()
	if !ok {
		return 0, syscall.EBADF
	}
	caller, _ := fuse.FromContext(ctx)
	clear(output)
	return e.run(ioctlCall{fd: fd, caller: caller, in: input, out: output})
}

// fionread is the number of bytes from the daemon's offset to the end.
// (For a regular file the kernel answers FIONREAD itself, with the
// caller's offset; it reaches the daemon for other kinds of file.)
func fionread(c ioctlCall) (int32, syscall.Errno) {
	v, err := unix.IoctlGetInt(c.fd, unix.TIOCINQ)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	return 0, putUint32(c.out, uint32(v))
}

// getFlags: FS_IOC_GETFLAGS is defined with a long, but the kernel, and
// FUSE's copy of the caller's buffer, hold an int.
func getFlags(c ioctlCall) (int32, syscall.Errno) {
	v, err := unix.IoctlGetUint32(c.fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	return 0, putUint32(c.out, v)
}

// fsxattr is struct fsxattr of linux/fs.h.
type fsxattr struct {
	xflags, extsize, nextents, projid, cowextsize uint32
	pad                                           [8]byte
}

func fsGetXattr(c ioctlCall) (int32, syscall.Errno) {
	var x fsxattr
	if len(c.out) < int(unsafe.Sizeof(x)) {
		return 0, syscall.EINVAL
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), fsIocFsgetxattr, uintptr(unsafe.Pointer(&x)))
	if errno != 0 {
		return 0, errno
	}
	copy(c.out, unsafe.Slice((*byte)(unsafe.Pointer(&x)), unsafe.Sizeof(x)))
	return 0, 0
}

// setFlags sets the flags of linux/fs.h (chattr) as the caller could on
// SOURCE: see mayChangeFlags. The owner is SOURCE's, not the mirror's
// cached one. A change made by another between the read and the set is
// lost, as between chattr's own get and set (the file system's check runs
// under the inode's lock, which the daemon cannot hold).
func setFlags(c ioctlCall) (int32, syscall.Errno) {
	if len(c.in) < 4 {
		return 0, syscall.EINVAL
	}
	want := binary.NativeEndian.Uint32(c.in) // the kernel reads an int there
	var st unix.Stat_t
	if err := unix.Fstat(c.fd, &st); err != nil {
		return 0, gofs.ToErrno(err)
	}
	old, err := unix.IoctlGetUint32(c.fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	if errno := mayChangeFlags(c.caller, st.Uid, old, want); errno != 0 {
		return 0, errno
	}
	return 0, gofs.ToErrno(unix.IoctlSetPointerInt(c.fd, unix.FS_IOC_SETFLAGS, int(int32(want))))
}

// The flags of linux/fs.h the mirror lets a caller change.
const (
	fsSecrmFl     = 0x00000001 // s: no effect on ext4 and xfs
	fsUnrmFl      = 0x00000002 // u: no effect on ext4 and xfs
	fsSyncFl      = 0x00000008 // S
	fsImmutableFl = 0x00000010 // i
	fsAppendFl    = 0x00000020 // a
	fsNodumpFl    = 0x00000040 // d
	fsNoatimeFl   = 0x00000080 // A
	fsDirsyncFl   = 0x00010000 // D
	fsTopdirFl    = 0x00020000 // T: an allocation hint
)

// ownerFlags need nothing but owning the file on ext4 and xfs.
// rootFlags need CAP_LINUX_IMMUTABLE, which the kernel checks of the
// caller before it sends the request (vfs_fileattr_set), and the mirror
// grants to uid 0 only. Every other flag needs a capability the file
// system checks of the daemon instead of the caller (j, data journaling:
// CAP_SYS_RESOURCE), or changes more than the file (F, case folding, what
// names a folder resolves and so what a hiding pattern covers; P, project
// quotas; x, DAX; C, copy on write): they are refused.
const (
	ownerFlags = fsSecrmFl | fsUnrmFl | fsSyncFl | fsNodumpFl | fsNoatimeFl | fsDirsyncFl | fsTopdirFl
	rootFlags  = ownerFlags | fsImmutableFl | fsAppendFl
)

// mayChangeFlags is the kernel's check of FS_IOC_SETFLAGS by caller on a
// file of owner (inode_owner_or_capable, then the file system's rules),
// with uid 0 standing for the capabilities: the flags that change must be
// ones caller may change.
func mayChangeFlags(caller *fuse.Caller, owner, old, want uint32) syscall.Errno {
	if caller == nil {
		return syscall.EPERM
	}
	mayChange := uint32(ownerFlags)
	switch {
	case caller.Uid == 0:
		mayChange = rootFlags
	case caller.Uid != owner:
		return syscall.EPERM
	}
	if (old^want)&^mayChange != 0 {
		return syscall.EPERM
	}
	return 0
}

// putUint32 writes v as the int the kernel would have written at the
// start of the caller's buffer.
func putUint32(out []byte, v uint32) syscall.Errno {
	if len(out) < 4 {
		return syscall.EINVAL
	}
	binary.NativeEndian.PutUint32(out, v)
	return 0
}
