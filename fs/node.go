package fs

import (
	"context"
	"path"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"mirrorfs/policy"
)

// shared is what every node of one mirror refers to.
type shared struct {
	policy atomic.Pointer[policy.Policy] // swapped whole on reload; no lock on the hot path
}

// node is one file or directory of the mirror: go-fuse's LoopbackNode, with
// the policy applied in front of the operations it governs.
type node struct {
	*gofs.LoopbackNode
	m *shared
}

var _ = (gofs.NodeWrapChilder)((*node)(nil))

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*gofs.LoopbackNode), m: n.m}
}

// childRel is the path of the entry name in n, from the mirror's root; it
// is computed only when some pattern needs it.
func (n *node) childRel(p *policy.Policy, name string) string {
	if !p.NeedsPath() {
		return ""
	}
	return path.Join(n.Path(nil), name)
}

// mayHide says whether name in n could be hidden, whatever its type.
func (n *node) mayHide(p *policy.Policy, name string) bool {
	return p.Hides() && p.HiddenAnyType(n.childRel(p, name), name)
}

func isDirMode(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

func setEntryTimeouts(p *policy.Policy, out *fuse.EntryOut) {
	if p.EntryTimeout > 0 {
		out.SetEntryTimeout(p.EntryTimeout)
	}
	if p.AttrTimeout > 0 {
		out.SetAttrTimeout(p.AttrTimeout)
	}
}

var _ = (gofs.NodeLookuper)((*node)(nil))

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.m.policy.Load()
	child, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno != 0 {
		return nil, errno
	}
	if n.mayHide(p, name) && p.Hidden(n.childRel(p, name), name, isDirMode(out.Attr.Mode)) {
		return nil, syscall.ENOENT
	}
	setEntryTimeouts(p, out)
	return child, 0
}

var _ = (gofs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	errno := n.LoopbackNode.Getattr(ctx, f, out)
	if p := n.m.policy.Load(); errno == 0 && p.AttrTimeout > 0 {
		out.SetTimeout(p.AttrTimeout)
	}
	return errno
}

var _ = (gofs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle filters listings: go-fuse uses the directory handle, not
// Readdir, when a node has one.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 || !n.m.policy.Load().Hides() {
		return fh, fuseFlags, errno
	}
	return &hidingDir{dir: fh.(dirHandle), n: n}, fuseFlags, 0
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

// dirHandle is what go-fuse's loopback directory handle provides.
type dirHandle interface {
	gofs.FileReaddirenter
	gofs.FileSeekdirer
	gofs.FileReleasedirer
	gofs.FileFsyncdirer
}

// hidingDir is a directory handle that skips hidden entries.
type hidingDir struct {
	dir dirHandle
	n   *node
}

func (d *hidingDir) hidden(e *fuse.DirEntry) bool {
	p := d.n.m.policy.Load()
	if !d.n.mayHide(p, e.Name) {
		return false
	}
	unknownType := e.Mode&syscall.S_IFMT == 0
	return p.Hidden(d.n.childRel(p, e.Name), e.Name, unknownType || isDirMode(e.Mode))
}

func (d *hidingDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		e, errno := d.dir.Readdirent(ctx)
		if e == nil || errno != 0 || !d.hidden(e) {
			return e, errno
		}
	}
}

func (d *hidingDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.dir.Seekdir(ctx, off)
}

func (d *hidingDir) Releasedir(ctx context.Context, flags uint32) { d.dir.Releasedir(ctx, flags) }

func (d *hidingDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.dir.Fsyncdir(ctx, flags)
}
