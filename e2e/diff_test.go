package e2e

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The differential test applies one seeded random sequence of operations
// to a plain directory and, through mirrorfs, to the mirror of another, and
// compares every outcome: errno, bytes, listings and the stat fields that
// must agree. Each worker has its own subtree, so that outcomes do not
// depend on how workers interleave; the daemon still serves them all at
// once.

func diffOps() int { return opsFromEnv(2000) }

// opsFromEnv is MIRRORFS_DIFF_OPS, the operations per worker of the
// differential tests (make torture raises it), or def.
func opsFromEnv(def int) int {
	if n, err := strconv.Atoi(os.Getenv("MIRRORFS_DIFF_OPS")); err == nil && n > 0 {
		return n
	}
	return def
}

func diffSeed(t *testing.T) uint64 {
	if s, err := strconv.ParseUint(os.Getenv("MIRRORFS_DIFF_SEED"), 10, 64); err == nil {
		return s
	}
	return uint64(time.Now().UnixNano())
}

const diffWorkers = 4

// diffUID is the user worker w runs as: the last one is not root.
func diffUID(w int) int {
	if w == diffWorkers-1 {
		return 1000
	}
	return 0
}

type opKind int

const (
	opCreate opKind = iota
	opOpen
	opClose
	opWrite
	opPwrite
	opRead
	opPread
	opFtruncate
	opTruncate
	opFallocate
	opFsync
	opFstat
	opRename
	opLink
	opSymlink
	opReadlink
	opMkdir
	opRmdir
	opUnlink
	opChmod
	opChown
	opUtimens
	opSetxattr
	opGetxattr
	opListxattr
	opRemovexattr
	opStat
	opReaddir
	opCopyRange
	opFchmod
	opTmpfile
	opLinkFd
	numOps
)

var opNames = [...]string{"create", "open", "close", "write", "pwrite", "read", "pread", "ftruncate",
	"truncate", "fallocate", "fsync", "fstat", "rename", "link", "symlink", "readlink", "mkdir", "rmdir",
	"unlink", "chmod", "chown", "utimensat", "setxattr", "getxattr", "listxattr", "removexattr", "lstat",
	"readdir", "copy_file_range", "fchmod", "tmpfile", "linkat_fd"}

// op is one operation; paths are relative to the worker's subtree.
type op struct {
	kind        opKind
	path, path2 string
	flags       int
	mode        uint32
	off, n      int64
	slot, slot2 int
	fill        byte
}

func (o op) String() string {
	return fmt.Sprintf("%s(%q %q flags=%#x mode=%#o off=%d n=%d slot=%d,%d)",
		opNames[o.kind], o.path, o.path2, o.flags, o.mode, o.off, o.n, o.slot, o.slot2)
}

// deepDir names, in operation paths, a folder of each subtree whose own
// path is longer than PATH_MAX: the mirror must reach it, and all below it,
// as the plain tree does. The driver reaches it through a descriptor.
const deepDir = "deep"

var (
	diffDirs  = []string{"", "d1", "d1/d2", "e", deepDir, deepDir + "/d1"}
	diffNames = []string{"f", "g", "d1", "d2", "e", "h"}
	openFlags = []int{unix.O_APPEND, unix.O_TRUNC, unix.O_DIRECTORY, unix.O_NOFOLLOW, unix.O_EXCL | unix.O_CREAT}
)

func randPath(r *rand.Rand) string {
	return filepath.Join(diffDirs[r.IntN(len(diffDirs))], diffNames[r.IntN(len(diffNames))])
}

func randOp(r *rand.Rand) op {
	o := op{kind: opKind(r.IntN(int(numOps))), path: randPath(r), path2: randPath(r),
		slot: r.IntN(4), slot2: r.IntN(4), fill: byte(r.IntN(256))}
	o.mode = []uint32{0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o2775, 0o000}[r.IntN(8)]
	o.off = []int64{0, 1, 4095, 4096, 65537, 1 << 20}[r.IntN(6)]
	o.n = []int64{0, 1, 100, 4096, 70000}[r.IntN(5)]
	o.flags = []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR}[r.IntN(3)]
	for _, f := range openFlags {
		if r.IntN(5) == 0 {
			o.flags |= f
		}
	}
	switch o.kind {
	case opRename:
		o.flags = []int{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[r.IntN(4)]
	case opUtimens:
		o.flags = r.IntN(3) // explicit, UTIME_NOW, UTIME_OMIT for mtime
	}
	return o
}

// side is one of the two trees with its open descriptors.
type side struct {
	root, deep int // the subtree and its deep folder
	fds        [4]int
	// killsSetID: the plain side plays the one documented difference of
	// root's writes through passthrough (see clearSetIDAsPassthrough).
	killsSetID bool
}

// deepChain is the deep folder's path below the subtree: 17 names of 250
// bytes, 4267 bytes in all.
var deepChain = strings.Split(strings.Repeat(strings.Repeat("x", 250)+"/", 17), "/")[:17]

// openSide opens the subtree dir, as root: the user of the side need not
// be able to walk to it.
func openSide(dir string) *side {
	s := &side{root: -1, deep: -1, fds: [4]int{-1, -1, -1, -1}}
	s.root, _ = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	return s
}

// makeDeep makes the side's deep folder, a name at a time, as uid, and
// checks that uid owns it: the driver's premise.
func (s *side) makeDeep(uid int) error {
	fd, err := unix.Dup(s.root)
	if err != nil {
		return err
	}
	for i, name := range deepChain {
		err := unix.Mkdirat(fd, name, 0o755)
		if err == nil {
			var next int
			next, err = unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			unix.Close(fd)
			fd = next
		} else {
			unix.Close(fd)
		}
		if err != nil {
			return fmt.Errorf("making the deep folder, at depth %d: %w", i, err)
		}
	}
	s.deep = fd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || int(st.Uid) != uid {
		return fmt.Errorf("the deep folder is owned by %d, not %d (%v)", st.Uid, uid, err)
	}
	return nil
}

// path is where rel is, reached through the side's descriptors: paths
// below the deep folder could not be named from the root.
func (s *side) path(rel string) string {
	fd := s.root
	if rel == deepDir || strings.HasPrefix(rel, deepDir+"/") {
		fd, rel = s.deep, strings.TrimPrefix(rel[len(deepDir):], "/")
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, rel)
}

func (s *side) closeAll() {
	for _, fd := range append(s.fds[:], s.root, s.deep) {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	*s = side{root: -1, deep: -1, fds: [4]int{-1, -1, -1, -1}}
}

// asUser runs f on a thread of its own whose file system identity is uid
// (setfsuid and setfsgid act on one thread; Go's setuid acts on all). The
// thread is never unlocked, so it ends with f. A new file's owner is the
// caller's fsuid, and so the mirror's handling of ownership is compared.
func asUser(uid int, f func()) {
	if uid == 0 {
		f()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		unix.Setfsgid(uid)
		unix.Setfsuid(uid)
		f()
	}()
	<-done
}

func errnoOf(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(unix.Errno); ok {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// statString is the part of a stat that must agree between the trees.
func statString(st *unix.Stat_t) string {
	size := st.Size
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		size = -1 // directory sizes are the file system's business
	}
	return fmt.Sprintf("mode=%#o size=%d nlink=%d uid=%d gid=%d", st.Mode, size, st.Nlink, st.Uid, st.Gid)
}

func lstatString(path string) string {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return errnoOf(err)
	}
	return statString(&st)
}

func fstatString(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errnoOf(err)
	}
	return statString(&st)
}

// apply runs o on s and describes the outcome.
func (s *side) apply(o op) string {
	p, p2 := s.path(o.path), s.path(o.path2)
	fd, fd2 := s.fds[o.slot], s.fds[o.slot2]
	buf := func() []byte {
		b := make([]byte, o.n)
		for i := range b {
			b[i] = o.fill + byte(i)
		}
		return b
	}
	switch o.kind {
	case opCreate, opOpen:
		flags := o.flags
		if o.kind == opCreate {
			flags |= unix.O_CREAT
		}
		nfd, err := unix.Open(p, flags|unix.O_CLOEXEC, o.mode)
		if err != nil {
			return errnoOf(err)
		}
		if fd >= 0 {
			unix.Close(fd)
		}
		s.fds[o.slot] = nfd
		var st unix.Stat_t
		unix.Fstat(nfd, &st)
		return "ok " + statString(&st)
	case opClose:
		if fd < 0 {
			return "closed"
		}
		s.fds[o.slot] = -1
		return errnoOf(unix.Close(fd))
	case opWrite:
		n, err := unix.Write(fd, buf())
		s.wrote(fd, n)
		return fmt.Sprintf("%d %s", n, errnoOf(err))
	case opPwrite:
		n, err := unix.Pwrite(fd, buf(), o.off)
		s.wrote(fd, n)
		return fmt.Sprintf("%d %s", n, errnoOf(err))
	case opRead, opPread:
		b := make([]byte, o.n)
		var n int
		var err error
		if o.kind == opRead {
			n, err = unix.Read(fd, b)
		} else {
			n, err = unix.Pread(fd, b, o.off)
		}
		if n < 0 {
			n = 0
		}
		return fmt.Sprintf("%d %08x %s", n, crc32.ChecksumIEEE(b[:n]), errnoOf(err))
	case opFtruncate:
		return errnoOf(unix.Ftruncate(fd, o.off))
	case opTruncate:
		return errnoOf(unix.Truncate(p, o.off))
	case opFallocate:
		return errnoOf(unix.Fallocate(fd, 0, o.off, o.n+1))
	case opFsync:
		return errnoOf(unix.Fsync(fd))
	case opFstat:
		return fstatString(fd)
	case opRename:
		var before, after unix.Stat_t
		unix.Lstat(p, &before)
		err := unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, p2, uint(o.flags))
		if err != nil {
			return errnoOf(err)
		}
		unix.Lstat(p2, &after)
		return fmt.Sprintf("ok ino-stable=%v", before.Ino == after.Ino)
	case opLink:
		// Both names, at once: the link count seen through the old one.
		return errnoOf(unix.Link(p, p2)) + " " + lstatString(p) + " " + lstatString(p2)
	case opSymlink:
		return errnoOf(unix.Symlink(o.path2, p))
	case opReadlink:
		b := make([]byte, 256)
		n, err := unix.Readlink(p, b)
		if err != nil {
			return errnoOf(err)
		}
		return string(b[:n])
	case opMkdir:
		return errnoOf(unix.Mkdir(p, o.mode))
	case opRmdir:
		return errnoOf(unix.Rmdir(p))
	case opUnlink:
		// The open descriptor may hold the unlinked file: its link count.
		return errnoOf(unix.Unlink(p)) + " " + fstatString(fd)
	case opChmod:
		// The other path is now and then another link of the same file.
		return errnoOf(unix.Chmod(p, o.mode)) + " " + lstatString(p2)
	case opChown:
		// chown follows symlinks: a symlink owned by another user in a
		// sticky folder trips fs.protected_symlinks in the kernel's own path
		// walk differently for FUSE and a local file system (EACCES vs
		// ELOOP), which says nothing about the mirror.
		id := []int{0, nobody, 1000}[int(o.fill)%3]
		return errnoOf(unix.Chown(p, id, id))
	case opUtimens:
		ts := []unix.Timespec{{Sec: 1_000_000 + int64(o.fill), Nsec: 5}, {Sec: 2_000_000, Nsec: 7}}
		switch o.flags {
		case 1:
			ts[1].Nsec = unix.UTIME_NOW
		case 2:
			ts[1].Nsec = unix.UTIME_OMIT
		}
		var before, after unix.Stat_t
		unix.Lstat(p, &before)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errnoOf(err)
		}
		unix.Lstat(p, &after)
		switch o.flags {
		case 0:
			// atime is not compared: resolving a path through a symlink
			// reads it, and a read moves atime on either tree.
			return fmt.Sprintf("ok mtime=%d.%d", after.Mtim.Sec, after.Mtim.Nsec)
		case 2:
			return fmt.Sprintf("ok mtime-kept=%v", after.Mtim == before.Mtim)
		}
		return "ok"
	case opSetxattr:
		return errnoOf(unix.Lsetxattr(p, "user.k"+strconv.Itoa(o.slot), buf()[:min(o.n, 100)], 0))
	case opGetxattr:
		b := make([]byte, 256)
		n, err := unix.Lgetxattr(p, "user.k"+strconv.Itoa(o.slot), b)
		if err != nil {
			return errnoOf(err)
		}
		return fmt.Sprintf("%q", b[:n])
	case opListxattr:
		b := make([]byte, 1024)
		n, err := unix.Llistxattr(p, b)
		if err != nil {
			return errnoOf(err)
		}
		names := strings.Split(strings.TrimRight(string(b[:n]), "\x00"), "\x00")
		sort.Strings(names)
		return strings.Join(names, ",")
	case opRemovexattr:
		return errnoOf(unix.Lremovexattr(p, "user.k"+strconv.Itoa(o.slot)))
	case opStat:
		return lstatString(p)
	case opReaddir:
		ents, err := os.ReadDir(s.path(filepath.Dir(o.path)))
		if err != nil {
			return errnoOf(unwrapErrno(err))
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name()+":"+e.Type().String())
		}
		return strings.Join(names, " ")
	case opFchmod:
		// By descriptor, also of a file no folder holds any more.
		return errnoOf(unix.Fchmod(fd, o.mode)) + " " + fstatString(fd)
	case opTmpfile:
		nfd, err := unix.Open(s.path(filepath.Dir(o.path)), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, o.mode)
		if err != nil {
			return errnoOf(err)
		}
		if fd >= 0 {
			unix.Close(fd)
		}
		s.fds[o.slot] = nfd
		return "ok " + fstatString(nfd)
	case opLinkFd:
		// An O_TMPFILE file gets its name so; an unlinked one cannot.
		return errnoOf(unix.Linkat(fd, "", unix.AT_FDCWD, p, unix.AT_EMPTY_PATH)) + " " + lstatString(p)
	case opCopyRange:
		off := o.off
		n, err := unix.CopyFileRange(fd, nil, fd2, &off, int(o.n), 0)
		return fmt.Sprintf("%d %s", n, errnoOf(err))
	}
	panic("unknown op")
}

func unwrapErrno(err error) error {
	for {
		if _, ok := err.(unix.Errno); ok {
			return err
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// mismatch is a difference between the trees.
type mismatch struct {
	index           int
	op              op
	plain, mirrored string
}

// replay runs ops as uid on fresh subtrees of both roots and returns the
// first mismatch, if any; index -1 is the making of the subtrees.
func replay(plainRoot, mirrorRoot, sub string, uid int, passthrough bool, ops []op) (m *mismatch) {
	dirs := []string{filepath.Join(plainRoot, sub), filepath.Join(mirrorRoot, sub)}
	for _, d := range dirs {
		os.Mkdir(d, 0o755)
		os.Chown(d, uid, uid)
	}
	a, b := openSide(dirs[0]), openSide(dirs[1])
	a.killsSetID = passthrough && uid == 0
	defer a.closeAll()
	defer b.closeAll()
	asUser(uid, func() {
		errA, errB := a.makeDeep(uid), b.makeDeep(uid)
		if errA != nil || errB != nil {
			m = &mismatch{-1, op{}, errnoOf(errA), errnoOf(errB)}
			return
		}
		for i, o := range ops {
			if pa, pb := a.apply(o), b.apply(o); pa != pb {
				m = &mismatch{i, o, pa, pb}
				return
			}
		}
	})
	return m
}

// wrote follows a write of n bytes to fd: on a side that plays passthrough
// for root, it clears the set-id bits as the mirror's write does.
func (s *side) wrote(fd, n int) {
	if s.killsSetID && n > 0 {
		clearSetIDAsPassthrough(fd)
	}
}

// clearSetIDAsPassthrough does to fd's file what a write through FUSE
// passthrough does: the kernel writes the backing file with the credentials
// it was registered with, which are the file owner's ids (nobody's for
// root's: fs/passthrough.go) and no CAP_FSETID, so even root's write clears
// setuid, and setgid where the group may execute or is root's. Root's
// write on the plain folder keeps them (CAP_FSETID).
func clearSetIDAsPassthrough(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	mode := st.Mode & 0o7777
	mode &^= unix.S_ISUID
	if st.Mode&unix.S_IXGRP != 0 || st.Gid == 0 {
		mode &^= unix.S_ISGID
	}
	if mode != st.Mode&0o7777 {
		unix.Fchmod(fd, mode)
	}
}

// shrink finds a short subsequence of ops that still shows a mismatch,
// replaying it sequentially.
func shrink(plainRoot, mirrorRoot string, uid int, passthrough bool, ops []op) []op {
	tries := 0
	return shrinkOps(ops, 400, func(candidate []op) bool {
		tries++
		return replay(plainRoot, mirrorRoot, fmt.Sprintf("min%d", tries), uid, passthrough, candidate) != nil
	})
}

// shrinkOps finds a short subsequence of ops for which fails still holds
// (delta debugging), calling fails at most tries times; nil if ops alone do
// not fail.
func shrinkOps[T any](ops []T, tries int, fails func([]T) bool) []T {
	if !fails(ops) {
		return nil // needs the concurrency to show
	}
	for chunk := len(ops) / 2; chunk >= 1 && tries > 1; {
		removed := false
		for start := 0; start+chunk <= len(ops) && tries > 1; start += chunk {
			candidate := append(append([]T(nil), ops[:start]...), ops[start+chunk:]...)
			tries--
			if fails(candidate) {
				ops, removed = candidate, true
				break
			}
		}
		if !removed {
			chunk /= 2
		}
	}
	return ops
}

func TestDifferential(t *testing.T) {
	for _, mode := range []string{"passthrough", "nopassthrough"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			plain := filepath.Join(e.dir, "plain")
			os.Mkdir(plain, 0o755)
			// allow_other: one worker is not root, and the kernel checks
			// its permissions on both trees.
			opts := "allow_other"
			if mode == "nopassthrough" {
				opts += ",nopassthrough"
			}
			e.start("-o", opts)
			seed := diffSeed(t)
			n := diffOps()
			var wg sync.WaitGroup
			found := make([]*mismatch, diffWorkers)
			seqs := make([][]op, diffWorkers)
			for w := 0; w < diffWorkers; w++ {
				r := rand.New(rand.NewPCG(seed, uint64(w)))
				for i := 0; i < n; i++ {
					seqs[w] = append(seqs[w], randOp(r))
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					found[w] = replay(plain, e.mnt, "w"+strconv.Itoa(w), diffUID(w), mode == "passthrough", seqs[w])
				}()
			}
			wg.Wait()
			for w, m := range found {
				if m == nil {
					continue
				}
				what := fmt.Sprintf("op %d %v", m.index, m.op)
				if m.index < 0 {
					what = "making the subtree"
				}
				t.Errorf("seed %d (MIRRORFS_DIFF_SEED=%d), worker %d (uid %d), %s:\n  plain:  %s\n  mirror: %s",
					seed, seed, w, diffUID(w), what, m.plain, m.mirrored)
				if m.index < 0 {
					break
				}
				if short := shrink(plain, e.mnt, diffUID(w), mode == "passthrough", seqs[w][:m.index+1]); short != nil {
					t.Errorf("shortest sequence found (%d ops):", len(short))
					for _, o := range short {
						t.Errorf("  %v", o)
					}
				} else {
					t.Errorf("it does not show when replayed alone: it needs the other workers")
				}
				break
			}
			t.Logf("differential: %s, seed %d, %d workers x %d operations", mode, seed, diffWorkers, n)
			pid := e.pid()
			unix.Kill(pid, unix.SIGTERM)
			e.stopped(pid)
		})
	}
}
