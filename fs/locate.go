package fs

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Every operation names its entry by the descriptor of the folder holding
// it and one name, never by SOURCE's path joined to the entry's: that path
// can be longer than PATH_MAX where the entry's own is not, and a path is
// resolved anew at each call, through symlinks a folder may have been
// swapped for. The mirror holds a descriptor of SOURCE for its whole life,
// and each folder's node keeps one of its folder (acquire); past maxKept,
// a folder is opened by its path from SOURCE instead (walk).

// maxRel is the longest folder path given to the kernel in one piece.
const maxRel = unix.PathMax - 1

// loc is where an entry is: a folder's descriptor and a path below it, or,
// with path "", a descriptor of the entry itself (an open file no folder
// holds any more).
type loc struct {
	dir  int
	path string
	ref  *dirRef // the reference to dir this loc holds, if any: done releases it
}

// flags are the *at flags that name the entry itself, not a symlink's target.
func (l loc) flags() int {
	if l.path == "" {
		return unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

func (l loc) done() {
	if l.ref != nil {
		l.ref.release()
	}
}

// proc is l as a single path, for the calls that take no folder descriptor
// (truncate, the xattr calls): the kernel resolves /proc/self/fd/N to what
// the descriptor is, so the path stays short. With path "", it is a link
// to be followed to the entry.
func (l loc) proc() string {
	if l.path == "" {
		return "/proc/self/fd/" + strconv.Itoa(l.dir)
	}
	return "/proc/self/fd/" + strconv.Itoa(l.dir) + "/" + l.path
}

// byInode runs call on a /proc path that names the entry at l itself, for
// the calls that follow a symlink at the end of their path (chmod,
// truncate): a symlink put at the name does not lead them elsewhere.
func (l loc) byInode(call func(fd int, path string) error) error {
	if l.path == "" {
		return call(l.dir, l.proc())
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return call(fd, "/proc/self/fd/"+strconv.Itoa(fd))
}

// byFd runs call on a descriptor (O_PATH) of the entry at l itself, never
// a symlink's target.
func (l loc) byFd(call func(fd int) error) error {
	if l.path == "" {
		return call(l.dir)
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return call(fd)
}

// A node's path from the mirror's root is computed in two ways, for two
// uses; use no other (not go-fuse's Inode.Path):
//   - relPath, by the names the kernel knows the nodes by (go-fuse's tree):
//     to reach an entry on SOURCE by path (locateByPath), and to tell that
//     a folder moved (listingFlags). It costs no syscall.
//   - storedPath (names.go), by the names SOURCE stores: what the policy's
//     patterns are matched against (entryPath, patternPath). On a
//     case-insensitive folder the two differ ("ETC" reached, "etc"
//     stored); it reads the folders on the way.
//
// relPath is n's path from the mirror's root ("" for the root), and false
// when n is in no folder any more (removed, or made with O_TMPFILE).
func (n *node) relPath() (string, bool) {
	var names []string
	for in := n.EmbeddedInode(); in != n.m.root; {
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		names = append(names, name)
		in = parent
	}
	slices.Reverse(names)
	return strings.Join(names, "/"), true
}

// locate finds the entry name of n, or n itself when name is "": by the
// kept descriptor of the folder that holds it and one name. A node in no
// folder is found through one of its open files, if any.
func (n *node) locate(name string) (loc, syscall.Errno) {
	if name == "" && n.EmbeddedInode() == n.m.root {
		return loc{dir: n.m.rootFd, path: "."}, 0
	}
	holder := n
	if name == "" {
		var parent *gofs.Inode
		name, parent = n.Parent()
		if parent == nil {
			return n.openLoc()
		}
		holder = parent.Operations().(*node)
	}
	r, errno := holder.acquire()
	if errno == 0 {
		return loc{dir: r.fd, path: name, ref: r}, 0
	}
	if errno != syscall.EMFILE && errno != syscall.ENFILE {
		return loc{}, errno
	}
	return holder.locateByPath(name) // out of descriptors: walk from the root
}

// locateFor finds n itself for an open by ctx's caller. For a request
// carried out with her credentials (creds.go) it is a descriptor of n's
// file (locateSelf), not a name in a folder: the folder go-fuse keeps as
// n's parent is one of the file's names, not necessarily the one she came
// by (a hard link), and she may not search it, while the kernel has
// checked the path she took. Root's opens keep the cheaper name: open
// checks what it opened (mustBe) with the statx it makes anyway.
func (n *node) locateFor(ctx context.Context) (loc, syscall.Errno) {
	if n.m.switches(ctx) {
		return n.locateSelf()
	}
	return n.locate("")
}

// locateSelf opens (O_PATH, as the daemon) the file n is, and checks it is
// still that file: a name swapped on SOURCE for another file gives ESTALE,
// never the other file.
func (n *node) locateSelf() (loc, syscall.Errno) {
	l, errno := n.locate("")
	if errno != 0 || l.path == "" {
		return l, errno
	}
	fd, err := unix.Openat(l.dir, l.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	l.done()
	if err != nil {
		return loc{}, gone(l, gofs.ToErrno(err))
	}
	if err := n.isFile(fd); err != nil {
		unix.Close(fd)
		return loc{}, gofs.ToErrno(err)
	}
	return soleLoc(fd), 0
}

// locateByPath finds the entry name of n by its path from the root.
func (n *node) locateByPath(name string) (loc, syscall.Errno) {
	rel, ok := n.relPath()
	if !ok && name == "" {
		return n.openLoc()
	}
	if !ok {
		return loc{}, syscall.ENOENT
	}
	if rel != "" {
		rel += "/"
	}
	return n.m.walk(rel + name)
}

// openLoc locates n through a copy of an open file's descriptor.
func (n *node) openLoc() (loc, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.handles {
		if fd, ok := h.descriptor(); ok {
			dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return loc{}, gofs.ToErrno(err)
			}
			return soleLoc(dup), 0
		}
	}
	return loc{}, syscall.ENOENT
}

// dirRef is a descriptor (O_PATH) of a folder of SOURCE, kept by the
// folder's node while the kernel knows the node: it follows the folder
// through renames, and no path is resolved again below it. refs counts its
// holders, the node included; the last one closes it.
type dirRef struct {
	fd   int
	refs atomic.Int32
}

// soleLoc is a loc of fd itself, holding the only reference to it: done
// closes fd.
func soleLoc(fd int) loc {
	r := &dirRef{fd: fd}
	r.refs.Store(1)
	return loc{dir: fd, ref: r}
}

func (r *dirRef) release() {
	if r.refs.Add(-1) == 0 {
		unix.Close(r.fd)
	}
}

// maxKept bounds the folders kept open, so that a walk over a huge tree
// cannot take every descriptor the process may have; past it, folders are
// reached by path.
const maxKept = 1 << 16

// acquire returns a held reference to n's folder descriptor, opening it
// from its parent's, name by name, if n keeps none.
func (n *node) acquire() (*dirRef, syscall.Errno) {
	if n.EmbeddedInode() == n.m.root {
		n.m.rootRef.refs.Add(1)
		return n.m.rootRef, 0
	}
	for {
		r := n.folder.Load()
		if r == nil {
			break
		}
		if c := r.refs.Load(); c > 0 && r.refs.CompareAndSwap(c, c+1) {
			return r, 0
		}
	}
	name, parent := n.Parent()
	if parent == nil {
		return nil, syscall.ENOENT
	}
	if n.m.keptFolders.Add(1) > maxKept {
		n.m.keptFolders.Add(-1)
		return nil, syscall.EMFILE
	}
	pr, errno := parent.Operations().(*node).acquire()
	if errno != 0 {
		n.m.keptFolders.Add(-1)
		return nil, errno
	}
	fd, err := unix.Openat(pr.fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	pr.release()
	if err == nil {
		err = n.isFile(fd)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		n.m.keptFolders.Add(-1)
		return nil, gofs.ToErrno(err)
	}
	r := &dirRef{fd: fd}
	r.refs.Store(2) // the node's and the caller's
	if !n.folder.CompareAndSwap(nil, r) {
		unix.Close(fd) // another request kept one first
		n.m.keptFolders.Add(-1)
		return n.acquire()
	}
	n.m.watch.add(n, fd)
	return r, 0
}

// isFile says whether fd, opened by n's parent and name, is n's own file:
// a node is its file, not its name. Another folder put at the name since
// (in a shared folder, anyone's 0700 one) is not n: ESTALE, and the kernel
// looks the name up again.
func (n *node) isFile(fd int) error {
	var x unix.Statx_t
	if errno := statxFd(fd, &x); errno != 0 {
		return errno
	}
	return n.mustBe(&x)
}

// mustBe says (ESTALE) whether x, found by n's parent and name, describes
// another file than n's: what a statx returns is enough, no call more. The
// generation (birth time) is compared where x has one: a statx asked for
// fewer fields than the node was made from may lack it.
func (n *node) mustBe(x *unix.Statx_t) error {
	if n.EmbeddedInode() == n.m.root {
		return nil
	}
	got, want := n.m.stableAttr(x), n.StableAttr()
	if got.Ino != want.Ino || x.Mask&unix.STATX_BTIME != 0 && got.Gen != want.Gen {
		return unix.ESTALE
	}
	return nil
}

// gone is the answer for n's own name missing on SOURCE, or another
// file's there (ESTALE): the kernel, which still has the name, looks it up
// again (LOOKUP_REVAL) and retries the open or stat once, so that the
// caller gets what is there now — nothing, or the new file as a new node —
// and a descriptor held on n keeps its own file. ENOENT would tell her that
// a name the kernel has just shown her does not exist.
func gone(l loc, errno syscall.Errno) syscall.Errno {
	if errno == syscall.ENOENT && l.path != "" {
		return syscall.ESTALE
	}
	return errno
}

// walk locates rel, a path below SOURCE: it opens the folder that holds
// the entry, following no symlink on the way (a folder swapped for a
// symlink on the source, or by a concurrent request, must not lead root
// elsewhere), and leaves one name to the call. A folder path too long to be
// given in one piece is opened a piece at a time.
func (m *shared) walk(rel string) (loc, syscall.Errno) {
	cut := strings.LastIndexByte(rel, '/')
	if cut < 0 {
		return loc{dir: m.rootFd, path: rel}, 0
	}
	l := loc{dir: m.rootFd}
	for dir := rel[:cut]; dir != ""; {
		piece := dir
		if len(piece) > maxRel {
			piece = piece[:strings.LastIndexByte(piece[:maxRel+1], '/')]
		}
		fd, err := openBeneath(l.dir, piece)
		l.done()
		if err != nil {
			return loc{}, gofs.ToErrno(err)
		}
		l = soleLoc(fd)
		dir = strings.TrimPrefix(dir[len(piece):], "/")
	}
	l.path = rel[cut+1:]
	return l, 0
}

// openBeneath opens the folder path below dir (O_PATH), following no
// symlink and not leaving dir; without openat2 (Linux < 5.6), as openat.
func openBeneath(dir int, path string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH}
	fd, err := unix.Openat2(dir, path, &how)
	for try := 0; err == unix.EAGAIN && try < 3; try++ { // a rename raced the check for escapes
		fd, err = unix.Openat2(dir, path, &how)
	}
	if err == unix.ENOSYS {
		fd, err = unix.Openat(dir, path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// forgetFolder lets go of n's kept folder descriptor, if it keeps one.
func (n *node) forgetFolder() {
	if r := n.folder.Swap(nil); r != nil {
		n.m.keptFolders.Add(-1)
		n.m.watch.remove(n, r.fd) // while r.fd is still open
		r.release()
	}
}
