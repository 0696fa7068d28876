package fs

import (
	"context"
	"path"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"mirrorfs/policy"
)

// shared is what every node of one mirror refers to.
type shared struct {
	policy    atomic.Pointer[policy.Policy] // swapped whole on reload; no lock on the hot path
	rootFd    int                           // SOURCE, O_PATH, held for the mirror's life
	dev       uint64                        // SOURCE's device
	euid      int
	readOnly  bool    // mounted -o ro
	calls     callers // switches threads to a request's caller (creds.go)
	root      *gofs.Inode
	rootAttr  gofs.StableAttr
	rootRef   *dirRef      // rootFd, never released
	kept      atomic.Int32 // folders keeping a descriptor (at.go)
	umasks    umaskTable   // the umask of each request making an entry (umask.go)
	localDevs sync.Map     // device → whether on a localFs (loopback.go)
	watch     *watcher     // tells the kernel of changes on SOURCE (watch.go); nil: none
	backing   *backing     // passthrough's state (passthrough.go)
}

// node is one file or directory of the mirror: the loopback (loopback.go),
// with the policy applied in front of the operations it governs.
type node struct {
	gofs.Inode
	m *shared

	mu      sync.Mutex
	handles []handle                // the way to a node no folder holds (at.go)
	listed  atomic.Pointer[listing] // the kernel's kept listing, nil: none
	kept    atomic.Pointer[dirRef]
	fold    atomic.Int32            // how the folder compares names (names.go)
	verdict atomic.Pointer[verdict] // pathHidden's last answer (names.go)
}

// childRel is the path of the entry name in n, from the mirror's root; it
// is computed only when some pattern needs it.
func (n *node) childRel(p *policy.Policy, name string) string {
	if !p.NeedsPath() {
		return ""
	}
	return path.Join(n.storedPath(), name)
}

// hidden says whether the entry name in n is hidden; the entry's path is
// built only if an anchored pattern's last component matches the name.
func (n *node) hidden(p *policy.Policy, name string, isDir bool) bool {
	return p.Hides() && p.HiddenLazy(name, isDir, func() string { return path.Join(n.storedPath(), name) })
}

// mayHide says whether name in n could be hidden, whatever its type.
func (n *node) mayHide(p *policy.Policy, name string) bool { return n.hidden(p, name, true) }

func isDirMode(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }

// staleTimeout is the cache timeout of a reply decided under a policy no
// longer in force: the shortest the kernel knows (0 would get the mount's
// default from go-fuse's bridge), so that the next use asks again.
const staleTimeout = time.Nanosecond

// setEntryTimeouts gives out the timeouts of p, the policy the request
// was decided under, or staleTimeout if p is no longer in force: the
// reply may reach the kernel after SetPolicy dropped the old entries.
// Every reply carries its timeouts, 0 included: the mount's default is 0
// (mount.go), since go-fuse puts that default in place of a 0 here, and
// "0s" in the policy must mean no caching.
func (m *shared) setEntryTimeouts(p *policy.Policy, out *fuse.EntryOut) {
	if m.policy.Load() != p {
		out.SetEntryTimeout(staleTimeout)
		out.SetAttrTimeout(staleTimeout)
		return
	}
	out.SetEntryTimeout(p.EntryTTL())
	out.SetAttrTimeout(p.AttrTTL())
}

// setAttrTimeout is setEntryTimeouts for a reply with attributes only.
func (m *shared) setAttrTimeout(p *policy.Policy, out *fuse.AttrOut) {
	if m.policy.Load() != p {
		out.SetTimeout(staleTimeout)
		return
	}
	out.SetTimeout(p.AttrTTL())
}

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

// listing is what the mirror knows of a folder's listing kept by the kernel.
type listing struct {
	filled int64  // when it was filled (unix ns)
	path   string // the folder's path then, if the policy's patterns name paths
}

// listingFlags say whether the kernel may keep this folder's listing
// (FOPEN_CACHE_DIR): a cached walk then costs no READDIR, and no lookup of
// every entry. The kernel drops a kept listing when it changes the folder
// itself and when the folder's mtime changes, which it checks once the
// attributes time out; a listing is also dropped, through an open without
// KEEP_CACHE, once it is older than the attribute timeout, since a change
// on the source can leave the mtime as it was (two in one clock tick, or
// rsync -a, tar and cp -p restoring it). So a listing is stale for no
// longer than an attribute. Under a policy whose patterns name paths, it is
// dropped too when the folder's path is not the one it was filled at: a
// folder moved elsewhere, or below a moved one, keeps its inode and its
// listing, but not what the patterns hide in it.
func (n *node) listingFlags(p *policy.Policy) uint32 {
	ttl := p.AttrTTL()
	var at string
	if p.NeedsPath() {
		at = n.Path(nil)
	}
	now := time.Now().UnixNano()
	switch l := n.listed.Load(); {
	case l == nil:
		n.watchListing()
		n.listed.Store(&listing{filled: now, path: at}) // this open fills the kept listing
	case now-l.filled > int64(ttl) || l.path != at:
		n.listed.Store(nil) // this open drops it; the next fills a new one
		return 0
	}
	return fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
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

func (d *dir) hidden(e *fuse.DirEntry) bool {
	unknownType := e.Mode&syscall.S_IFMT == 0
	return d.n.hidden(d.policy, e.Name, unknownType || isDirMode(e.Mode))
}

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		e, errno := d.ds.Readdirent(ctx)
		if e == nil || errno != 0 || !d.hidden(e) {
			return e, errno
		}
	}
}

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.ds.Seekdir(ctx, off)
}

// Releasedir drops the kernel's listing if the policy changed while the
// folder was open: that listing may have been filled under the old one,
// after SetPolicy dropped the rest. (From a goroutine: a notification is
// not sent from within a request.)
func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	d.n.closing(d)
	d.ds.Releasedir(ctx, flags)
	if d.n.m.policy.Load() != d.policy {
		d.n.listed.Store(nil)
		go d.n.NotifyContent(0, 0)
	}
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

func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.ds.Fsyncdir(ctx, flags)
}
