package fs

import (
	"context"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A default ACL on a folder replaces the umask for what is made in it: the
// new entry's ACL is the default one, limited by the mode asked for alone.
// The kernel applies the umask before the mirror sees the mode, unless told
// not to (FUSE_DONT_MASK); then it sends the umask apart, and the mirror
// applies it where SOURCE would: in a folder without a default ACL. The
// mirror itself runs with umask 0 (the process's, shared by every thread),
// so nothing else masks the mode on SOURCE.
//
// go-fuse hands a node the mode but not the umask; umasks keeps each
// request's umask in a table, by the request's cancel channel, which is
// its context's Done and unique among the requests in flight.
type umasks struct {
	fuse.RawFileSystem
	of *umaskTable
}

// umaskTable holds the umask of each request that makes an entry, while
// it runs: <-chan struct{} → uint32.
type umaskTable struct{ sync.Map }

func (u *umasks) with(cancel <-chan struct{}, umask uint32, call func() fuse.Status) fuse.Status {
	u.of.Store(cancel, umask)
	defer u.of.Delete(cancel)
	return call()
}

func (u *umasks) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return u.with(cancel, in.Umask, func() fuse.Status { return u.RawFileSystem.Create(cancel, in, name, out) })
}

func (u *umasks) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return u.with(cancel, in.Umask, func() fuse.Status { return u.RawFileSystem.Tmpfile(cancel, in, out) })
}

func (u *umasks) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return u.with(cancel, in.Umask, func() fuse.Status { return u.RawFileSystem.Mkdir(cancel, in, name, out) })
}

func (u *umasks) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return u.with(cancel, in.Umask, func() fuse.Status { return u.RawFileSystem.Mknod(cancel, in, name, out) })
}

// masked is mode as it is to be asked of SOURCE for an entry made in n:
// without the bits of the caller's umask, unless n has a default ACL. A
// default ACL set or removed on SOURCE between the look and the making
// is missed, as it is by SOURCE's own callers between their umask and
// their open.
func (n *node) masked(ctx context.Context, mode uint32) uint32 {
	umask, ok := n.m.umasks.Load(ctx.Done())
	if !ok || mode&umask.(uint32)&0o777 == 0 {
		return mode
	}
	if n.hasDefaultACL() {
		return mode
	}
	return mode &^ (umask.(uint32) & 0o777)
}

// hasDefaultACL says whether n's folder has a default ACL on SOURCE.
// Anyone may read it; where it cannot be read, the umask applies.
func (n *node) hasDefaultACL() bool {
	r, errno := n.acquire()
	if errno != 0 {
		return false
	}
	defer r.release()
	size, err := unix.Getxattr(loc{dir: r.fd}.proc(), "system.posix_acl_default", nil)
	return err == nil && size > 0
}
