package fs

import (
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mirrorfs/mounts"
	"mirrorfs/policy"
)

// Options says what to mirror and how.
type Options struct {
	Source        string
	FsName        string // the mount's source column; Source when empty
	ReadOnly      bool
	AllowOther    bool // implies default_permissions: the kernel checks access
	NoPassthrough bool
	Debug         bool
	KernelFlags   []string       // nodev, nosuid, noexec, ...
	Policy        *policy.Policy // nil: policy.Default
	Watch         string         // WatchAuto ("" too), WatchFanotify, WatchInotify or WatchOff
	IDs           IDMap          // the owner, group and mode bits shown (idmap.go)
	Beneath       *MountID       // slide the mount under this one, on top at the mountpoint (beneath.go)
	Log           *slog.Logger
}

// FSType is the type mirrorfs mounts carry in the mount table.
const FSType = "fuse.mirrorfs"

// Mirror is a mounted mirror. It owns its go-fuse server, which it keeps
// to itself (go-fuse's Serve must never be called after Mount: go-fuse
// #512), and every way of ending the mount (unmount.go).
type Mirror struct {
	srv        *fuse.Server
	backing    *backing
	root       *node
	log        *slog.Logger
	mountpoint string
	at         *attachment   // where the mount API attached it; nil when fusermount3 mounted it
	entry      mounts.Mount  // its line in the mount table
	done       chan struct{} // closed once the session ended and SOURCE is let go
	devMu      sync.Mutex    // guards dev: a reload may write to it while the session ends
	dev        int           // a copy of the session's /dev/fuse descriptor, for incEpoch; -1: none
	watching   string        // which watcher runs (watch.go)
	stats      *Stats        // the session's counters (stats.go); nil: none kept
}

// Passthrough is the passthrough state: "on", "off (why)" or "unknown (why)".
func (m *Mirror) Passthrough() string { return m.backing.State() }

// Entry is the mirror's line in the mount table, as it was once mounted.
func (m *Mirror) Entry() mounts.Mount { return m.entry }

// Mount mirrors o.Source at mountpoint and returns once the kernel answers
// there. The caller waits with Wait, never with Serve (go-fuse #512).
func Mount(mountpoint string, o Options) (*Mirror, error) {
	pol := o.Policy
	if pol == nil {
		pol = policy.Default
	}
	root, err := newRoot(o.Source, pol)
	if err != nil {
		return nil, err
	}
	root.m.readOnly = o.ReadOnly
	root.m.ids = o.IDs
	w, watching, err := newWatcher(o.Watch, o.Log)
	if err != nil {
		unix.Close(root.m.rootFd)
		return nil, err
	}
	root.m.watch = w
	root.m.calls.log = o.Log
	b := &backing{disabled: o.NoPassthrough, log: o.Log, calls: root.m.registrar()}
	root.m.backing = b
	opts := o.gofsOptions(b)
	opts.RootStableAttr = &root.m.rootAttr // the mountpoint shows SOURCE's inode number, not 0
	opts.MaxWrite = maxWrite
	raw, stats := withStats(&bridgeInit{&writebacks{&umasks{gofs.NewNodeFS(root, opts), &root.m.umasks}}, b})
	mount := mountFusermount
	switch {
	case o.Beneath != nil:
		mount = func(raw fuse.RawFileSystem, mountpoint string, mo *fuse.MountOptions) (*Mirror, bool, error) {
			return mountBeneath(raw, mountpoint, mo, *o.Beneath)
		}
	case os.Geteuid() == 0:
		mount = mountKernel
	}
	m, ended, err := mount(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		// While go-fuse's serve loops may still run on SOURCE's descriptor,
		// it stays open: closed, its number could be reused by the next
		// open, and a request would act on that file instead.
		if ended {
			unix.Close(root.m.rootFd)
			w.close()
		}
		return nil, err
	}
	m.backing, m.root, m.log, m.watching, m.stats = b, root, o.Log, watching, stats
	m.done = make(chan struct{})
	w.start(root) // before serveEnded, which stops it
	go m.serveEnded()
	if o.Beneath == nil {
		if m.entry, err = m.findEntry(); err != nil {
			m.Stop(time.Second)
			return nil, err
		}
	}
	b.probe(o.Source)
	return m, nil
}

// findEntry finds the mirror's line in the mount table, and checks that
// no other mount sits on top of it.
func (m *Mirror) findEntry() (mounts.Mount, error) {
	table, err := mounts.Read()
	if err != nil {
		return mounts.Mount{}, fmt.Errorf("mountinfo: %w", err)
	}
	top, ok := mounts.TopAt(table, m.mountpoint)
	switch {
	case !ok || top.FSType != FSType:
		return mounts.Mount{}, fmt.Errorf("mount %s: not in the mount table after mounting", m.mountpoint)
	case m.at != nil && top.ID != m.at.tableID:
		return mounts.Mount{}, fmt.Errorf("mount %s: another mount (id %d) is on top of ours (id %d)", m.mountpoint, top.ID, m.at.tableID)
	}
	return top, nil
}

// mountFusermount mounts as a user does: fusermount3, setuid root, mounts
// with its own checks (the user must own the mountpoint, no symlink is
// followed to it) and hands back the /dev/fuse descriptor. ended says
// whether no serve loop runs any more after a failure.
func mountFusermount(raw fuse.RawFileSystem, mountpoint string, mo *fuse.MountOptions) (*Mirror, bool, error) {
	srv, err := fuse.NewServer(raw, mountpoint, mo)
	if err != nil {
		return nil, true, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// go-fuse's Unmount returns nil only once its serve loops ended.
		return nil, srv.Unmount() == nil, err
	}
	return &Mirror{srv: srv, mountpoint: mountpoint, dev: -1}, true, nil
}

// mountKernel mounts as root, through the mount API on descriptors
// (kmount.go). go-fuse serves the /dev/fuse descriptor given as its
// "/dev/fd/N" mountpoint, and does not mount anything itself. The session
// is up (INIT answered) before the mount is attached, so that nobody ever
// waits on a mount that is not served yet; go-fuse's WaitMount would add
// only a poll of the mount, a request to our own mount, which the daemon
// never makes. ended says whether no serve loop runs any more after a
// failure.
func mountKernel(raw fuse.RawFileSystem, mountpoint string, mo *fuse.MountOptions) (*Mirror, bool, error) {
	dir, rootmode, err := openMountpoint(mountpoint)
	if err != nil {
		return nil, true, err
	}
	defer unix.Close(dir)
	return serveAttached(raw, rootmode, mo, func(mnt int) (*attachment, error) {
		return attach(mnt, dir, mountpoint)
	}, mountpoint)
}

// serveAttached makes a FUSE mount, serves it, and attaches it with
// attachTo. ended says whether no serve loop runs any more after a failure.
func serveAttached(raw fuse.RawFileSystem, rootmode uint32, mo *fuse.MountOptions,
	attachTo func(mnt int) (*attachment, error), mountpoint string) (*Mirror, bool, error) {
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("/dev/fuse: %w", err)
	}
	mnt, err := newFuseMount(dev, rootmode, mo)
	if err != nil {
		unix.Close(dev)
		return nil, true, err
	}
	// A copy of dev of the mirror's own, for what go-fuse does not send
	// (incEpoch): go-fuse closes dev when the session ends, and its number
	// could then be another file's.
	own, err := unix.FcntlInt(uintptr(dev), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Close(mnt)
		unix.Close(dev)
		return nil, true, fmt.Errorf("/dev/fuse: %w", err)
	}
	served := *mo
	served.DirectMount = false // it would try mount(2) on "/dev/fd/N" first
	srv, err := fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(dev), &served)
	if err != nil { // go-fuse closed dev
		unix.Close(mnt)
		unix.Close(own)
		return nil, true, err
	}
	go srv.Serve()
	at, err := attachTo(mnt)
	// Closing the last descriptor of a mount that is not attached (any
	// more) ends it, and with it the session.
	unix.Close(mnt)
	if err != nil {
		ended := endedWithin(srv, time.Second)
		if ended {
			unix.Close(own)
		}
		return nil, ended, err
	}
	return &Mirror{srv: srv, at: at, mountpoint: mountpoint, dev: own}, true, nil
}

// newRoot opens source, and holds it open: every operation of the mirror
// is relative to this descriptor (locate.go).
func newRoot(source string, pol *policy.Policy) (*node, error) {
	fd, err := unix.Open(source, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", source, err)
	}
	var x unix.Statx_t
	if errno := statxFd(fd, &x); errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("source %s: %w", source, errno)
	}
	n := &node{m: &shared{rootFd: fd, dev: unix.Mkdev(x.Dev_major, x.Dev_minor), euid: os.Geteuid()}}
	n.m.root = &n.Inode
	n.m.rootAttr = n.m.stableAttr(&x)
	n.m.rootRef = &dirRef{fd: fd}
	n.m.rootRef.refs.Store(1) // never released: serveEnded closes rootFd
	n.m.policy.Store(pol)
	return n, nil
}

// serveEnded waits for the session to end, then lets go of SOURCE and
// tells Done. It is the one place where the end of a session is handled.
func (m *Mirror) serveEnded() {
	m.srv.Wait()
	m.root.m.watch.stop()
	unix.Close(m.root.m.rootFd)
	m.devMu.Lock()
	if m.dev >= 0 {
		unix.Close(m.dev)
		m.dev = -1
	}
	m.devMu.Unlock()
	close(m.done)
}

// Done is closed once the FUSE session has ended (an unmount, an aborted
// connection) and SOURCE is let go.
func (m *Mirror) Done() <-chan struct{} { return m.done }

// Wait returns once the FUSE session has ended and SOURCE is let go.
func (m *Mirror) Wait() { <-m.done }

// SetPolicy swaps in p at once: each request reads the policy once and
// decides by the old one or the new one, never a mix. Names the kernel has
// cached that p hides are dropped from its cache, so the very next lookup
// of them fails; so are the listings it keeps of folders (FOPEN_CACHE_DIR),
// when the hidden names may differ.
//
// A request decided under the old policy may still be on its way: its
// reply is written to /dev/fuse after its method returns, possibly after
// the drops below. Such a reply is given the shortest cache timeout if the
// request ends after the swap (setEntryTimeouts); one that ended before it
// but is written after is caught by the epoch (incEpoch), which makes the
// kernel look up again every entry whose lookup began before this point.
// Without the epoch (Linux < 6.16, or a mount made by fusermount3, whose
// /dev/fuse descriptor only go-fuse holds) that last window stays open:
// such a reply keeps its entry cached for the old policy's entry timeout.
func (m *Mirror) SetPolicy(p *policy.Policy) {
	old := m.root.m.policy.Swap(p)
	if p.Hides() {
		m.incEpoch()
		invalidateHidden(p, m.root.EmbeddedInode(), "")
	}
	if p.Hides() || old.Hides() {
		invalidateListings(m.root.EmbeddedInode())
	}
}

// incEpoch sends the epoch while the session lasts (best effort: see
// SetPolicy).
func (m *Mirror) incEpoch() {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	if m.dev >= 0 {
		incEpoch(m.dev)
	}
}

// invalidateListings drops the kernel's listings of dir and the folders
// below it that the kernel knows.
func invalidateListings(dir *gofs.Inode) {
	dir.NotifyContent(0, 0)
	for _, child := range dir.Children() {
		if child.IsDir() {
			invalidateListings(child)
		}
	}
}

// invalidateHidden walks the inodes the kernel knows and drops the entries
// that p hides from the kernel's cache.
func invalidateHidden(p *policy.Policy, dir *gofs.Inode, rel string) {
	for name, child := range dir.Children() {
		childRel := path.Join(rel, name)
		if p.Hidden(childRel, name, child.IsDir()) {
			dir.NotifyEntry(name)
			continue
		}
		if child.IsDir() {
			invalidateHidden(p, child, childRel)
		}
	}
}

func (o Options) gofsOptions(b *backing) *gofs.Options {
	// The mount's cache timeouts are 0: go-fuse gives them to a reply
	// whose own are 0, so a policy's "0s" would become them. Every reply
	// of the mirror carries the policy's (node.go, setEntryTimeouts).
	var entry, attr time.Duration
	fsname := o.FsName
	if fsname == "" {
		fsname = o.Source
	}
	kernel := append([]string(nil), o.KernelFlags...)
	if o.ReadOnly {
		kernel = append(kernel, "ro")
	}
	if o.AllowOther {
		kernel = append(kernel, "default_permissions")
	}
	return &gofs.Options{
		EntryTimeout: &entry,
		AttrTimeout:  &attr,
		// Mode 0 is a mode like any other: show it, do not make it 0644.
		NullPermissions: true,
		ServerCallbacks: b,
		Logger:          slog.NewLogLogger(o.Log.Handler(), slog.LevelWarn),
		MountOptions: fuse.MountOptions{
			FsName:      fsname,
			Name:        "mirrorfs",
			AllowOther:  o.AllowOther,
			Options:     kernel,
			Debug:       o.Debug,
			DirectMount: os.Geteuid() == 0,
			// Locks go to the source, so the mirror's users and the source's
			// see the same locks.
			EnableLocks: true,
			// The kernel checks POSIX ACLs, not mode bits alone: an ACL
			// entry that shuts a user out of a folder on SOURCE shuts her
			// out here, on every component of a path, though root serves
			// her. It reads them through Getxattr (as her) and keeps them
			// as long as the attributes (the policy's attr_timeout).
			EnableAcl: true,
			// The umask comes apart from the mode: a default ACL replaces it
			// (umask.go). A direct-I/O descriptor (an appending one,
			// loopback.go openFlags) may be mapped shared (Linux 6.6+).
			ExtraCapabilities: fuse.CAP_DONT_MASK | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
			// Read replies are copied, not spliced: for the common small
			// reads a splice costs more calls than it saves copying.
			DisableSplice: true,
			MaxStackDepth: maxStackDepth(o.Source),
			Logger:        slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
		},
	}
}

// bridgeInit keeps go-fuse's node bridge talking to backing rather than to
// the server directly: the bridge's Init would replace the ServerCallbacks
// given in the options with the server, and that Init does nothing else.
type bridgeInit struct {
	fuse.RawFileSystem
	backing *backing
}

func (i *bridgeInit) Init(s *fuse.Server) { i.backing.srv = s }
