package fs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"mirrorfs/policy"
)

// The listing cache: how long the kernel may keep a folder's listing, and
// what a listing leaves out under the policy it was opened under.

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
		at, _ = n.relPath() // any path that changes when the folder moves serves
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

// listHides says whether the listing of n under p skips e: so a listing
// follows the one policy in force when its folder was opened. An entry of
// unknown type is judged as a folder, by the patterns of either type.
func (n *node) listHides(p *policy.Policy, e *fuse.DirEntry) bool {
	unknownType := e.Mode&syscall.S_IFMT == 0
	return n.nameHidden(p, e.Name, unknownType || isDirMode(e.Mode))
}

// dropListingFrom drops the kernel's listing of n if the policy is no
// longer p, the one a handle of it was opened under: that listing may have
// been filled under p after SetPolicy dropped the rest. (From a goroutine:
// a notification is not sent from within a request.)
func (n *node) dropListingFrom(p *policy.Policy) {
	if n.m.policy.Load() != p {
		n.listed.Store(nil)
		go n.NotifyContent(0, 0)
	}
}
