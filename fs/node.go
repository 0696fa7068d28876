package fs

import (
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
	policy      atomic.Pointer[policy.Policy] // swapped whole on reload; no lock on the hot path
	rootFd      int                           // SOURCE, O_PATH, held for the mirror's life
	dev         uint64                        // SOURCE's device
	euid        int
	readOnly    bool    // mounted -o ro
	calls       callers // switches threads to a request's caller (creds.go)
	root        *gofs.Inode
	rootAttr    gofs.StableAttr
	rootRef     *dirRef      // rootFd, never released
	keptFolders atomic.Int32 // folders keeping a descriptor (locate.go, acquire)
	umasks      umaskTable   // the umask of each request making an entry (umask.go)
	localDevs   sync.Map     // device → whether on a localFs (loopback.go)
	watch       *watcher     // tells the kernel of changes on SOURCE (watch.go); nil: none
	backing     *backing     // passthrough's state (passthrough.go)
	ids         IDMap        // what stat shows: -o uid=, gid=, umask= (idmap.go)
}

// node is one file or directory of the mirror: its go-fuse methods
// (methods.go) check the policy, then run the operation on SOURCE
// (loopback.go).
type node struct {
	gofs.Inode
	m *shared

	mu      sync.Mutex
	handles []handle                // the way to a node no folder holds (handles.go)
	listed  atomic.Pointer[listing] // the kernel's kept listing, nil: none
	folder  atomic.Pointer[dirRef]  // n's own folder descriptor, if n is one and keeps it (locate.go)
	fold    atomic.Int32            // how the folder compares names (names.go)
	verdict atomic.Pointer[verdict] // pathHidden's last answer (names.go)
}

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
		out.SetEntryTimeout(m.entryTTL(staleTimeout))
		out.SetAttrTimeout(staleTimeout)
		return
	}
	out.SetEntryTimeout(m.entryTTL(p.EntryTTL()))
	out.SetAttrTimeout(p.AttrTTL())
}

// entryTTL is ttl, or none under a mapping: every walk through the mirror
// is then looked up again, name by name, with the walker's credentials
// (idmap.go). None is 0, not staleTimeout, which the kernel keeps until
// its next tick.
func (m *shared) entryTTL(ttl time.Duration) time.Duration {
	if m.ids.Active() {
		return 0
	}
	return ttl
}

// setAttrTimeout is setEntryTimeouts for a reply with attributes only.
func (m *shared) setAttrTimeout(p *policy.Policy, out *fuse.AttrOut) {
	if m.policy.Load() != p {
		out.SetTimeout(staleTimeout)
		return
	}
	out.SetTimeout(p.AttrTTL())
}
