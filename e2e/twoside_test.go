package e2e

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The two-sided differential test: each worker runs one seeded random
// sequence of steps, each made either through the mirror or directly on
// SOURCE, while descriptors are held on both sides and files are mapped
// through the mirror. A model of the files (bytes, modes, names) predicts
// every outcome. After each step SOURCE must match the model at once — a
// byte the model has and SOURCE lacks was lost — and the mirror must match
// SOURCE within tsBound, though the policy's cache timeouts are long: only
// coherence, not expiry, can pass it.

const (
	tsWorkers = 2
	tsBound   = 500 * time.Millisecond
	tsMapLen  = 16384
	tsPolicy  = "entry_timeout = '30s'\nattr_timeout = '30s'\n"
)

// tsSide is where a step acts.
type tsSide int

const (
	onSource tsSide = iota
	onMirror
)

func (s tsSide) String() string { return [...]string{"S", "M"}[s] }

type tsKind int

const (
	tsOpen     tsKind = iota // hold a descriptor, O_APPEND now and then
	tsClose                  // close a held descriptor
	tsWrite                  // through a held descriptor: append, or pwrite at an offset
	tsAppend                 // open by name with O_APPEND, write, close: echo >>
	tsPwrite                 // open by name, write at an offset, close
	tsReplace                // write a temporary file, rename it over the name
	tsRename                 // rename over
	tsUnlink                 // unlink, also while open
	tsTruncate               // truncate by name
	tsChmod                  // chmod by name
	tsUtimes                 // set the mtime
	tsRewrite                // same-size rewrite in place, mtime put back (rsync --inplace -t)
	tsMkdir                  // mkdir
	tsRmdir                  // rmdir
	tsMmap                   // map a file through the mirror, MAP_SHARED
	tsRace                   // one appender on each side at once
	tsNumKinds
)

var tsKindNames = [...]string{"open", "close", "write", "append", "pwrite", "replace", "rename", "unlink",
	"truncate", "chmod", "utimes", "rewrite", "mkdir", "rmdir", "mmap", "race"}

// tsOp is one step; paths are relative to the worker's subtree.
type tsOp struct {
	kind        tsKind
	side        tsSide
	path, path2 string
	slot        int
	off         int64
	n           int
	fill        byte
	mode        uint32
	app         bool
}

func (o tsOp) String() string {
	side := o.side.String()
	if o.kind == tsRace {
		side = "S+M"
	}
	return fmt.Sprintf("%s %s(%q %q slot=%d off=%d n=%d mode=%#o append=%v)",
		side, tsKindNames[o.kind], o.path, o.path2, o.slot, o.off, o.n, o.mode, o.app)
}

// The names a worker uses: files in its subtree and in two folders that
// come and go.
var (
	tsFiles = []string{"a", "b", "c", "d/a", "d/b", "e/a"}
	tsDirs  = []string{"d", "e"}
)

func randTSOp(r *rand.Rand) tsOp {
	o := tsOp{kind: tsKind(r.IntN(int(tsNumKinds))), side: tsSide(r.IntN(2)),
		path: tsFiles[r.IntN(len(tsFiles))], path2: tsFiles[r.IntN(len(tsFiles))], slot: r.IntN(4),
		off: []int64{0, 1, 100, 4095, 4096, 9000}[r.IntN(6)], n: []int{1, 7, 100, 1000, 5000}[r.IntN(5)],
		fill: byte(r.IntN(256)), mode: []uint32{0o644, 0o600, 0o755, 0o640}[r.IntN(4)], app: r.IntN(2) == 0}
	switch o.kind {
	case tsReplace, tsRewrite:
		if r.IntN(4) != 0 {
			o.side = onSource // what other programs do to SOURCE
		}
	case tsMkdir, tsRmdir:
		o.path = tsDirs[r.IntN(len(tsDirs))]
	case tsMmap:
		o.side, o.slot = onMirror, o.slot%2
	}
	return o
}

func (o tsOp) bytes() []byte {
	b := make([]byte, o.n)
	for i := range b {
		b[i] = o.fill + byte(i*7)
	}
	return b
}

// tsFile is the model of one file (an inode): it outlives its names while
// a descriptor or a map holds it.
type tsFile struct {
	data []byte
	mode uint32
	past map[uint64]bool // hashes of the bytes it held before
}

// remember keeps the bytes f holds now as one of its past states, before
// they change: a read that shows them is a late view of f, not another file.
func (f *tsFile) remember() {
	if f.past == nil {
		f.past = map[uint64]bool{}
	}
	f.past[tsHash(f.data)] = true
}

// held says whether f once held b.
func (f *tsFile) held(b []byte) bool { return f.past[tsHash(b)] }

func tsHash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

func (f *tsFile) writeAt(b []byte, off int64) {
	f.remember()
	if end := int(off) + len(b); end > len(f.data) {
		f.data = append(f.data, make([]byte, end-len(f.data))...)
	}
	copy(f.data[off:], b)
}

func (f *tsFile) truncate(n int64) {
	f.remember()
	if int(n) <= len(f.data) {
		f.data = f.data[:n]
		return
	}
	f.data = append(f.data, make([]byte, int(n)-len(f.data))...)
}

type tsHeld struct {
	fd   int // -1: none
	side tsSide
	path string // the name it was opened by
	f    *tsFile
	app  bool
}

type tsMap struct {
	mem []byte // nil: none
	f   *tsFile
}

// tsWorker is one worker's subtree on both sides and its model.
type tsWorker struct {
	root  [2]string // by tsSide
	files map[string]*tsFile
	dirs  map[string]bool
	held  [4]tsHeld
	maps  [2]tsMap
	step  int
}

func newTSWorker(src, mnt, sub string) (*tsWorker, error) {
	w := &tsWorker{root: [2]string{filepath.Join(src, sub), filepath.Join(mnt, sub)},
		files: map[string]*tsFile{}, dirs: map[string]bool{}}
	for i := range w.held {
		w.held[i].fd = -1
	}
	// Made through the mirror, so that the start does not depend on what
	// is tested.
	return w, os.Mkdir(w.root[onMirror], 0o755)
}

func (w *tsWorker) close() {
	for _, h := range w.held {
		if h.fd >= 0 {
			unix.Close(h.fd)
		}
	}
	for _, m := range w.maps {
		if m.mem != nil {
			unix.Munmap(m.mem)
		}
	}
}

func (w *tsWorker) path(side tsSide, rel string) string { return filepath.Join(w.root[side], rel) }

func (w *tsWorker) parentOK(rel string) bool {
	d := path.Dir(rel)
	return d == "." || w.dirs[d]
}

// expect is the outcome the model predicts for o: "ok" or an errno name.
func (w *tsWorker) expect(o tsOp) string {
	f := w.files[o.path]
	switch o.kind {
	case tsClose, tsWrite:
		if w.held[o.slot].fd < 0 {
			return "none"
		}
	case tsOpen, tsReplace, tsRace:
		if !w.parentOK(o.path) {
			return "ENOENT"
		}
	case tsRename:
		if f == nil || !w.parentOK(o.path2) {
			return "ENOENT"
		}
	case tsMkdir:
		if w.dirs[o.path] {
			return "EEXIST"
		}
	case tsRmdir:
		if !w.dirs[o.path] {
			return "ENOENT"
		}
		for name := range w.files {
			if path.Dir(name) == o.path {
				return "ENOTEMPTY"
			}
		}
	default:
		if f == nil {
			return "ENOENT"
		}
	}
	return "ok"
}

// apply makes step o on its side and, where the model predicted it to
// succeed, on the model; it returns the outcome and the prediction.
func (w *tsWorker) apply(o tsOp) (got, want string) {
	want = w.expect(o)
	defer func() {
		if r := recover(); r != nil { // a step the model has no file for
			got = fmt.Sprintf("a file where the model has none (%v)", r)
		}
	}()
	if want == "none" {
		return want, want
	}
	p, p2 := w.path(o.side, o.path), w.path(o.side, o.path2)
	var err error
	switch o.kind {
	case tsOpen:
		err = w.open(o, p)
	case tsClose:
		err = unix.Close(w.held[o.slot].fd)
		w.held[o.slot] = tsHeld{fd: -1}
	case tsWrite:
		err = w.write(o)
	case tsAppend, tsPwrite:
		err = w.writeByName(o, p)
	case tsReplace:
		err = w.replace(o, p)
	case tsRename:
		if err = unix.Rename(p, p2); err == nil && o.path != o.path2 {
			w.files[o.path2] = w.files[o.path]
			delete(w.files, o.path)
		}
	case tsUnlink:
		if err = unix.Unlink(p); err == nil {
			delete(w.files, o.path)
		}
	case tsTruncate:
		if err = unix.Truncate(p, o.off); err == nil {
			w.files[o.path].truncate(o.off)
		}
	case tsChmod:
		if err = unix.Chmod(p, o.mode); err == nil {
			w.files[o.path].mode = o.mode
		}
	case tsUtimes:
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 1_000_000 + int64(o.fill), Nsec: int64(o.n)}}
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	case tsRewrite:
		err = w.rewrite(o, p)
	case tsMkdir:
		if err = unix.Mkdir(p, 0o755); err == nil {
			w.dirs[o.path] = true
		}
	case tsRmdir:
		if err = unix.Rmdir(p); err == nil {
			delete(w.dirs, o.path)
		}
	case tsMmap:
		err = w.mmap(o, p)
	case tsRace:
		return w.race(o), want
	}
	return errnoOf(err), want
}

// open holds a descriptor of the file at p in o's slot, making the file if
// there is none.
func (w *tsWorker) open(o tsOp, p string) error {
	flags := unix.O_RDWR | unix.O_CREAT | unix.O_CLOEXEC
	if o.app {
		flags |= unix.O_APPEND
	}
	fd, err := unix.Open(p, flags, 0o644)
	if err != nil {
		return err
	}
	if old := w.held[o.slot].fd; old >= 0 {
		unix.Close(old)
	}
	f := w.files[o.path]
	if f == nil {
		f = &tsFile{mode: 0o644}
		w.files[o.path] = f
	}
	w.held[o.slot] = tsHeld{fd: fd, side: o.side, path: o.path, f: f, app: o.app}
	return nil
}

// write writes through a held descriptor.
func (w *tsWorker) write(o tsOp) error {
	h := w.held[o.slot]
	return writeModel(h.fd, h.f, h.app, o)
}

// writeModel writes o's bytes to fd, whose file f is: at its end if fd was
// opened with O_APPEND (the end of the file as it is now, whichever side
// made it), else at o.off.
func writeModel(fd int, f *tsFile, app bool, o tsOp) error {
	b := o.bytes()
	if app {
		f.remember()
		f.data = append(f.data, b...)
		return fullWrite(unix.Write(fd, b))
	}
	f.writeAt(b, o.off)
	return fullWrite(unix.Pwrite(fd, b, o.off))
}

func fullWrite(n int, err error) error {
	if err == nil && n == 0 {
		return fmt.Errorf("wrote nothing")
	}
	return err
}

func (w *tsWorker) writeByName(o tsOp, p string) error {
	flags := unix.O_WRONLY | unix.O_CLOEXEC
	if o.kind == tsAppend {
		flags |= unix.O_APPEND
	}
	fd, err := unix.Open(p, flags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return writeModel(fd, w.files[o.path], o.kind == tsAppend, o)
}

// replace writes a new file and renames it over p: the old file lives on
// in what holds it.
func (w *tsWorker) replace(o tsOp, p string) error {
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
	if err := os.WriteFile(tmp, o.bytes(), 0o644); err != nil {
		return unwrapErrno(err)
	}
	if err := unix.Rename(tmp, p); err != nil {
		return err
	}
	w.files[o.path] = &tsFile{data: o.bytes(), mode: 0o644}
	return nil
}

// rewrite changes bytes in place without changing the size, then puts the
// times back, as rsync --inplace -t and cp -p do.
func (w *tsWorker) rewrite(o tsOp, p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err
	}
	f := w.files[o.path]
	b := o.bytes()[:min(o.n, len(f.data))]
	if len(b) > 0 {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_, err = unix.Pwrite(fd, b, 0)
		unix.Close(fd)
		if err != nil {
			return err
		}
		f.writeAt(b, 0)
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// mmap maps the file at p, through the mirror, shared, in o's map slot.
func (w *tsWorker) mmap(o tsOp, p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, tsMapLen, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	if old := w.maps[o.slot].mem; old != nil {
		unix.Munmap(old)
	}
	w.maps[o.slot] = tsMap{mem: mem, f: w.files[o.path]}
	return nil
}

// race appends lines to the file at o.path from both sides at once, each
// through a descriptor opened with O_APPEND before the other side wrote:
// every line must be in SOURCE afterwards, whole, after the bytes that were
// there.
func (w *tsWorker) race(o tsOp) string {
	var fds [2]int
	for side := range fds {
		fd, err := unix.Open(w.path(tsSide(side), o.path), unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return errnoOf(err)
		}
		defer unix.Close(fd)
		fds[side] = fd
	}
	var want []string
	var wg sync.WaitGroup
	for side, fd := range fds {
		var lines []string
		for i := 0; i < 30; i++ {
			lines = append(lines, fmt.Sprintf("%s%d.%d.%d%s\n", tsSide(side), w.step, o.fill, i, strings.Repeat("x", i)))
		}
		want = append(want, lines...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, l := range lines {
				unix.Write(fd, []byte(l))
			}
		}()
	}
	wg.Wait()
	return w.raceResult(o.path, want)
}

// raceResult checks SOURCE after a race and takes its bytes into the model.
func (w *tsWorker) raceResult(rel string, want []string) string {
	f := w.files[rel]
	if f == nil {
		f = &tsFile{mode: 0o644}
		w.files[rel] = f
	}
	got, err := os.ReadFile(w.path(onSource, rel))
	if err != nil {
		return errnoOf(unwrapErrno(err))
	}
	old := f.data
	f.remember()
	f.data = got
	if !bytes.HasPrefix(got, old) {
		return fmt.Sprintf("the %d bytes before the race were overwritten", len(old))
	}
	lines := strings.SplitAfter(string(got[len(old):]), "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return l == "" })
	sort.Strings(lines)
	sort.Strings(want)
	if !slices.Equal(lines, want) {
		return fmt.Sprintf("%d lines in SOURCE after the race, want %d, each whole", len(lines), len(want))
	}
	return "ok"
}

// names is what the model has in folder dir ("." the subtree).
func (w *tsWorker) names(dir string) []string {
	var names []string
	for name := range w.files {
		if path.Dir(name) == dir {
			names = append(names, path.Base(name))
		}
	}
	if dir == "." {
		for d := range w.dirs {
			names = append(names, d)
		}
	}
	sort.Strings(names)
	return names
}

func listing(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errnoOf(unwrapErrno(err))
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}

// tsStat is what must agree between SOURCE and the mirror about a name.
// It asks for no atime: a read through the mirror marks the atime stale,
// and a stat that asks for it makes the kernel fetch every attribute
// afresh — the probe would make the coherence it is to judge.
func tsStat(p string) string {
	var st unix.Statx_t
	mask := unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_NLINK | unix.STATX_SIZE | unix.STATX_MTIME
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, mask, &st); err != nil {
		return errnoOf(err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Sprintf("dir mode=%#o", st.Mode)
	}
	return fmt.Sprintf("mode=%#o size=%d nlink=%d mtime=%d.%09d", st.Mode, st.Size, st.Nlink, st.Mtime.Sec, st.Mtime.Nsec)
}

// readFresh reads the file at p through a new descriptor, to its end,
// without the fstat of os.ReadFile (which asks for the atime, see tsStat).
func readFresh(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var all []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			return all, err
		}
		all = append(all, buf[:n]...)
	}
}

// checkSource compares SOURCE with the model: it is the truth the mirror
// is held to, so a difference is final.
func (w *tsWorker) checkSource() string {
	for _, rel := range tsFiles {
		p, f := w.path(onSource, rel), w.files[rel]
		b, err := os.ReadFile(p)
		switch {
		case f == nil && err == nil:
			return fmt.Sprintf("%s exists, want none", rel)
		case f == nil:
			continue
		case err != nil:
			return fmt.Sprintf("%s: %v", rel, err)
		case !bytes.Equal(b, f.data):
			return fmt.Sprintf("%s holds %d bytes, %s", rel, len(b), bytesDiff(b, f.data))
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&0o7777 != f.mode {
			return fmt.Sprintf("%s: mode %#o, want %#o", rel, st.Mode&0o7777, f.mode)
		}
	}
	for _, dir := range append([]string{"."}, tsDirs...) {
		if dir == "." || w.dirs[dir] {
			if got, want := listing(w.path(onSource, dir)), strings.Join(w.names(dir), ","); got != want {
				return fmt.Sprintf("folder %s lists %q, want %q", dir, got, want)
			}
		}
	}
	return ""
}

func bytesDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("want %d: first difference at byte %d", len(want), i)
}

// checkMirror compares the mirror with SOURCE and the model. fatal: what
// it saw cannot be a late view of the truth (a held descriptor reading the
// file that replaced its own). Held descriptors and maps come first: a
// fresh open drops the kernel's cached pages of its file (no
// FOPEN_KEEP_CACHE), which would make them right by the probe's doing.
func (w *tsWorker) checkMirror() (diff string, fatal bool) {
	if d, fatal := w.checkHeldAndMaps(); d != "" {
		return d, fatal
	}
	return w.checkNames(), false
}

// checkHeldAndMaps reads every held descriptor and map: each must show its
// own file.
func (w *tsWorker) checkHeldAndMaps() (diff string, fatal bool) {
	for i, h := range w.held {
		if d, fatal := w.checkHeld(h); d != "" {
			return fmt.Sprintf("descriptor %d (%s, opened by %s): %s", i, h.side, h.path, d), fatal
		}
	}
	for i, m := range w.maps {
		if m.mem != nil && !mapShows(m.mem, m.f.data) {
			return fmt.Sprintf("shared map %d does not show its file's %d bytes", i, len(m.f.data)), false
		}
	}
	return "", false
}

// checkNames compares what the mirror shows by name with SOURCE: stat,
// bytes read through a new descriptor, listings.
func (w *tsWorker) checkNames() string {
	for _, rel := range tsFiles {
		if s, m := tsStat(w.path(onSource, rel)), tsStat(w.path(onMirror, rel)); s != m {
			return fmt.Sprintf("lstat %s: mirror %s, SOURCE %s", rel, m, s)
		}
		if f := w.files[rel]; f != nil {
			if b, err := readFresh(w.path(onMirror, rel)); err != nil || !bytes.Equal(b, f.data) {
				return fmt.Sprintf("a fresh open of %s read %d bytes (%v), %s", rel, len(b), err, bytesDiff(b, f.data))
			}
		}
	}
	for _, dir := range tsDirs {
		if s, m := tsStat(w.path(onSource, dir)), tsStat(w.path(onMirror, dir)); s != m {
			return fmt.Sprintf("lstat %s: mirror %s, SOURCE %s", dir, m, s)
		}
	}
	for _, dir := range append([]string{"."}, tsDirs...) {
		if dir == "." || w.dirs[dir] {
			if got, want := listing(w.path(onMirror, dir)), strings.Join(w.names(dir), ","); got != want {
				return fmt.Sprintf("folder %s lists %q through the mirror, want %q", dir, got, want)
			}
		}
	}
	return ""
}

// checkHeld reads a held descriptor whole: it must read its own file.
func (w *tsWorker) checkHeld(h tsHeld) (string, bool) {
	if h.fd < 0 {
		return "", false
	}
	b := make([]byte, len(h.f.data)+tsMapLen)
	n, err := unix.Pread(h.fd, b, 0)
	if n < 0 {
		n = 0
	}
	if b = b[:n]; err == nil && bytes.Equal(b, h.f.data) {
		return "", false
	}
	// What the descriptor's own file held before is a late view, not the
	// replacement's, even where the two hold the same bytes (both empty).
	now := w.files[h.path]
	replaced := now != nil && now != h.f && bytes.Equal(b, now.data) && !h.f.held(b)
	if replaced {
		return "reads the file that replaced its own", true
	}
	return fmt.Sprintf("read %d bytes (%v), %s", n, err, bytesDiff(b, h.f.data)), false
}

// mapShows says whether mem shows the start of data; a page the kernel
// thinks past the end faults, which counts as not showing it yet.
func mapShows(mem, data []byte) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	n := min(len(mem), len(data))
	return bytes.Equal(mem[:n], data[:n])
}

// converge waits until the mirror shows SOURCE's state, at most tsBound,
// and returns how long that took, or what still differs.
func (w *tsWorker) converge() (time.Duration, string) {
	if d := w.checkSource(); d != "" {
		return 0, "SOURCE: " + d
	}
	began := time.Now()
	for {
		d, fatal := w.checkMirror()
		took := time.Since(began)
		switch {
		case d == "":
			// Read the held descriptors and maps once more, after the
			// fresh opens of checkNames dropped their file's cached pages:
			// the next step then finds them cached, as a reader's are.
			d, _ = w.checkHeldAndMaps()
			return took, d
		case fatal:
			return took, d
		case took > tsBound:
			return took, fmt.Sprintf("still after %v: %s", tsBound, d)
		}
		time.Sleep(time.Millisecond)
	}
}

type tsFailure struct {
	index int
	op    tsOp
	what  string
}

// tsRun runs ops in a fresh subtree sub of both sides and returns the
// first failure, if any; each coherence latency is sent to lat, if not nil.
func tsRun(src, mnt, sub string, ops []tsOp, lat func(time.Duration)) *tsFailure {
	w, err := newTSWorker(src, mnt, sub)
	if err != nil {
		return &tsFailure{-1, tsOp{}, err.Error()}
	}
	defer w.close()
	for i, o := range ops {
		w.step = i
		if got, want := w.apply(o); got != want {
			return &tsFailure{i, o, fmt.Sprintf("outcome %s, want %s", got, want)}
		}
		took, d := w.converge()
		if d != "" {
			return &tsFailure{i, o, d}
		}
		if lat != nil {
			lat(took)
		}
	}
	return nil
}

func TestDifferentialTwoSided(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		e.start(append(mode, "--config", e.writePolicy(tsPolicy))...)
		seed, n := diffSeed(t), opsFromEnv(1500)
		var mu sync.Mutex
		var lats []time.Duration
		record := func(d time.Duration) { mu.Lock(); lats = append(lats, d); mu.Unlock() }
		seqs, found := make([][]tsOp, tsWorkers), make([]*tsFailure, tsWorkers)
		var wg sync.WaitGroup
		for w := range tsWorkers {
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for range n {
				seqs[w] = append(seqs[w], randTSOp(r))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				found[w] = tsRun(e.src, e.mnt, fmt.Sprintf("w%d", w), seqs[w], record)
			}()
		}
		wg.Wait()
		t.Logf("two-sided: seed %d, %d workers x %d steps; mirror coherent after %s", seed, tsWorkers, n, percentiles(lats))
		for w, f := range found {
			if f != nil {
				tsReport(t, e, seed, w, seqs[w], f)
				break
			}
		}
		pid := e.pid()
		unix.Kill(pid, unix.SIGTERM)
		e.stopped(pid)
	})
}

// tsReport says what failed, and the shortest sequence that still fails.
func tsReport(t *testing.T, e *env, seed uint64, w int, seq []tsOp, f *tsFailure) {
	t.Errorf("seed %d (MIRRORFS_DIFF_SEED=%d), worker %d, step %d %v:\n  %s", seed, seed, w, f.index, f.op, f.what)
	if f.index < 0 {
		return
	}
	tries := 0
	short := shrinkOps(seq[:f.index+1], 60, func(c []tsOp) bool {
		tries++
		return tsRun(e.src, e.mnt, fmt.Sprintf("min%d", tries), c, nil) != nil
	})
	if short == nil {
		t.Errorf("it does not show when replayed alone: it needs the other worker")
		return
	}
	what := "no failure when run once more"
	if last := tsRun(e.src, e.mnt, "min-last", short, nil); last != nil {
		what = fmt.Sprintf("step %d: %s", last.index, last.what)
	}
	t.Errorf("shortest sequence found (%d steps), failing at %s:", len(short), what)
	for _, o := range short {
		t.Errorf("  %v", o)
	}
}

func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no step"
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	return fmt.Sprintf("p50 %v, p99 %v, max %v (%d steps)", q(0.5), q(0.99), ds[len(ds)-1], len(ds))
}

// TestTwoSidedModel checks the judge: with both sides one plain folder, the
// mirror is SOURCE, and any difference is the model's own mistake.
func TestTwoSidedModel(t *testing.T) {
	dir, seed := t.TempDir(), diffSeed(t)
	r := rand.New(rand.NewPCG(seed, 0))
	var ops []tsOp
	for range opsFromEnv(2000) {
		ops = append(ops, randTSOp(r))
	}
	if f := tsRun(dir, dir, "w", ops, nil); f != nil {
		t.Errorf("seed %d, step %d %v: %s", seed, f.index, f.op, f.what)
	}
}
