package fs

import (
	"slices"
	"strconv"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Every operation names its entry by a folder's descriptor and a path
// relative to it, never by SOURCE's path joined to the entry's: that path
// can be longer than PATH_MAX where the entry's own is not, and the kernel
// would refuse it (ENAMETOOLONG) where a plain directory does not. The
// mirror holds a descriptor of SOURCE for its whole life; a relative path
// that is itself too long is walked a piece at a time.

// maxRel is the longest relative path given to the kernel in one piece. It
// leaves room for the /proc/self/fd/N/ prefix of loc.proc.
const maxRel = unix.PathMax - 1 - len("/proc/self/fd/2147483647/")

// loc is where an entry is: a folder's descriptor and a path below it.
type loc struct {
	dir  int
	path string
	own  bool // dir was opened for this loc: done closes it
}

func (l loc) done() {
	if l.own {
		unix.Close(l.dir)
	}
}

// proc is l as a single path, for the calls that take no folder descriptor
// (truncate, the l*xattr calls): the kernel resolves /proc/self/fd/N to the
// folder itself, so the path stays short.
func (l loc) proc() string {
	return "/proc/self/fd/" + strconv.Itoa(l.dir) + "/" + l.path
}

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

// locate finds the entry name of n, or n itself when name is "".
func (n *node) locate(name string) (loc, syscall.Errno) {
	rel, ok := n.relPath()
	if !ok {
		return loc{}, syscall.ENOENT
	}
	switch {
	case rel == "" && name == "":
		rel = "."
	case rel == "":
		rel = name
	case name != "":
		rel += "/" + name
	}
	return n.m.walk(rel)
}

// walk locates rel, a path below SOURCE. While rel is too long to be given
// in one piece, it opens the folder a piece down and goes on from there.
func (m *shared) walk(rel string) (loc, syscall.Errno) {
	l := loc{dir: m.rootFd, path: rel}
	for len(l.path) > maxRel {
		cut := strings.LastIndexByte(l.path[:maxRel+1], '/')
		if cut <= 0 {
			l.done()
			return loc{}, syscall.ENAMETOOLONG
		}
		fd, err := unix.Openat(l.dir, l.path[:cut], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		l.done()
		if err != nil {
			return loc{}, gofs.ToErrno(err)
		}
		l = loc{dir: fd, path: l.path[cut+1:], own: true}
	}
	return l, 0
}
