package fs

import (
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"unicode"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// Hidden names are matched against the names SOURCE stores, not the ones a
// caller types. On a case-insensitive folder (exFAT, vfat, an ext4, f2fs or
// tmpfs folder with casefold) "ID.KEY" reaches the file stored as "id.key":
// the hide check of an entry found there looks at the names the folder
// stores for it. On case-sensitive folders, the typed name is the stored
// one, and the check costs nothing more than before.

// A folder's case behaviour, once known (node.fold).
const (
	foldUnknown int32 = iota
	foldSensitive
	foldInsensitive
)

// fsCaseFoldFl is FS_CASEFOLD_FL, the per-folder casefold attribute.
const fsCaseFoldFl = 0x40000000

// casefoldFeature says whether the kernel can fold case on a file system
// of type t at all; without it, such a folder is case-sensitive.
var casefoldFeature = map[int64]func() bool{
	unix.EXT4_SUPER_MAGIC:  sync.OnceValue(func() bool { return exists("/sys/fs/ext4/features/casefold") }),
	unix.F2FS_SUPER_MAGIC:  sync.OnceValue(func() bool { return exists("/sys/fs/f2fs/features/casefold") }),
	unix.TMPFS_MAGIC:       sync.OnceValue(func() bool { return exists("/sys/fs/tmpfs/features/casefold") }),
	unix.XFS_SUPER_MAGIC:   func() bool { return false },
	unix.BTRFS_SUPER_MAGIC: func() bool { return false },
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// caseInsensitive says whether a name in n's folder may reach an entry
// stored under another name. Unknown counts as insensitive: the stored
// names are then read, which is slower but never wrong.
func (n *node) caseInsensitive() bool {
	switch n.fold.Load() {
	case foldSensitive:
		return false
	case foldInsensitive:
		return true
	}
	fold := n.probeFold()
	if fold != foldUnknown {
		n.fold.Store(fold)
	}
	return fold != foldSensitive
}

// probeFold finds out how n's folder compares names: from its file system
// type and casefold attribute where the kernel says, else by looking up a
// stored name with cased letters in the other case.
func (n *node) probeFold() int32 {
	fd, errno := n.openDir()
	if errno != 0 {
		return foldUnknown
	}
	defer unix.Close(fd)
	var s unix.Statfs_t
	if unix.Fstatfs(fd, &s) == nil {
		if can, known := casefoldFeature[int64(s.Type)]; known {
			if !can() {
				return foldSensitive
			}
			if flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil {
				return foldOf(flags&fsCaseFoldFl != 0)
			}
		}
	}
	// Inode numbers cannot tell: a FUSE source may number a file by the
	// path it was reached by. A stored name reached by another case that
	// the folder does not store is what a case-insensitive folder does.
	ents := readNames(fd)
	name := ""
	for _, e := range ents {
		if swapCase(e.name) != e.name {
			name = e.name
			break
		}
	}
	if name == "" {
		return foldUnknown // nothing to probe with yet
	}
	swapped := swapCase(name)
	var x unix.Statx_t
	if statx(fd, swapped, unix.AT_SYMLINK_NOFOLLOW, &x) != 0 {
		return foldSensitive
	}
	for _, e := range ents {
		if e.name == swapped {
			return foldSensitive // both are stored: two files
		}
	}
	return foldInsensitive
}

func foldOf(insensitive bool) int32 {
	if insensitive {
		return foldInsensitive
	}
	return foldSensitive
}

// sameFile says whether two descriptions are of one file.
func sameFile(a, b *unix.Statx_t) bool {
	return a.Ino == b.Ino && a.Dev_major == b.Dev_major && a.Dev_minor == b.Dev_minor
}

// swapCase turns upper case into lower and lower into upper.
func swapCase(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsUpper(r) {
			return unicode.ToLower(r)
		}
		return unicode.ToUpper(r)
	}, s)
}

type dirent struct {
	ino  uint64
	name string
}

// readNames lists the folder open at fd (without "." and "..").
func readNames(fd int) []dirent {
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		got, err := unix.Getdents(fd, buf)
		if err != nil || got <= 0 {
			return out
		}
		for b := buf[:got]; len(b) >= 19; {
			reclen := int(b[16]) | int(b[17])<<8
			if reclen < 19 || reclen > len(b) {
				break
			}
			ino := uint64(0)
			for i := 7; i >= 0; i-- {
				ino = ino<<8 | uint64(b[i])
			}
			name := b[19:reclen]
			if i := strings.IndexByte(string(name), 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{ino: ino, name: s})
			}
			b = b[reclen:]
		}
	}
}

// storedNames are the names n's folder stores for the entry that name
// reaches: those equal to name but for case (a folder stores one of them;
// inode numbers are not compared, since a FUSE source may number a file by
// the path it was reached by), else those with its inode number that reach
// the same file (another normalisation of name). None when name reaches
// nothing.
func (n *node) storedNames(name string) []string {
	fd, errno := n.openDir()
	if errno != 0 {
		return nil
	}
	defer unix.Close(fd)
	var want unix.Statx_t
	if statx(fd, name, unix.AT_SYMLINK_NOFOLLOW, &want) != 0 {
		return nil
	}
	ents := readNames(fd)
	var names []string
	for _, e := range ents {
		if strings.EqualFold(e.name, name) {
			names = append(names, e.name)
		}
	}
	if len(names) > 0 {
		return names
	}
	for _, e := range ents {
		var x unix.Statx_t
		if e.ino == want.Ino && statx(fd, e.name, unix.AT_SYMLINK_NOFOLLOW, &x) == 0 && sameFile(&x, &want) {
			names = append(names, e.name)
		}
	}
	return names
}

// entryHidden says whether the entry that name reaches in n is hidden by
// p: by name as typed, or, in a case-insensitive folder, by a name the
// folder stores for it.
func (n *node) entryHidden(p *policy.Policy, name string, isDir bool) bool {
	if !p.Hides() {
		return false
	}
	if n.nameHidden(p, name, isDir) {
		return true
	}
	if !n.caseInsensitive() {
		return false
	}
	for _, s := range n.storedNames(name) {
		if s != name && n.nameHidden(p, s, isDir) {
			return true
		}
	}
	return false
}

// verdict is what pathHidden found for a node under one policy, while the
// node stays where it was then (parent and name).
type verdict struct {
	p      *policy.Policy
	parent *gofs.Inode
	name   string
	hidden bool // by its own name; its folders have their own verdicts
}

// pathHidden says whether n is hidden under p by its own name or by a
// folder on its way to the root: a node reached before a reload (a cwd,
// a descriptor, a handle) is judged by the policy in force now. A node in
// no folder (removed, or made by O_TMPFILE) has no name to hide. Each
// step's answer is kept per node, so the walk matches no pattern twice
// while nothing moves.
func (n *node) pathHidden(p *policy.Policy) bool {
	if !p.Hides() || n.EmbeddedInode() == n.m.root {
		return false
	}
	name, parent := n.Parent()
	if parent == nil {
		return false
	}
	pn := parent.Operations().(*node)
	if pn.pathHidden(p) {
		return true
	}
	if v := n.verdict.Load(); v != nil && v.p == p && v.parent == parent && v.name == name {
		return v.hidden
	}
	hidden := pn.entryHidden(p, name, n.IsDir())
	n.verdict.Store(&verdict{p: p, parent: parent, name: name, hidden: hidden})
	return hidden
}

// storedPath is n's path from the root by the names SOURCE stores, the
// one the policy's patterns see (see relPath for the other): a folder
// reached as "ETC" on a case-insensitive source is "etc" to an anchored
// pattern. It is built only when such a pattern's last component matches.
func (n *node) storedPath() string {
	var names []string
	for in := n.EmbeddedInode(); in != n.m.root; {
		name, parent := in.Parent()
		if parent == nil {
			break
		}
		pn := parent.Operations().(*node)
		if pn.caseInsensitive() {
			if stored := pn.storedNames(name); len(stored) == 1 {
				name = stored[0]
			}
		}
		names = append(names, name)
		in = parent
	}
	slices.Reverse(names)
	return strings.Join(names, "/")
}

// entryPath is the path of the entry name in n as the policy's patterns
// see it: by the names SOURCE stores (storedPath).
func (n *node) entryPath(name string) string { return path.Join(n.storedPath(), name) }

// patternPath is entryPath(name) when some pattern of p names a path, and
// "" otherwise: no pattern needs it, and it costs a walk to the root.
func (n *node) patternPath(p *policy.Policy, name string) string {
	if !p.NeedsPath() {
		return ""
	}
	return n.entryPath(name)
}

// nameHidden says whether the entry name in n is hidden by the name as
// given; its path is built only if an anchored pattern's last component
// matches the name. (entryHidden also tries the names SOURCE stores.)
func (n *node) nameHidden(p *policy.Policy, name string, isDir bool) bool {
	return p.Hides() && p.HiddenLazy(name, isDir, func() string { return n.entryPath(name) })
}
