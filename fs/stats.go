package fs

import (
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Stats counts what a mirror's session serves: requests, errors by errno
// and latency by operation, open files and folders, and the files the
// kernel reads and writes directly (passthrough). go-fuse has no hook for
// this (its RecordLatencies does nothing), so a RawFileSystem wrapper,
// the outermost layer, counts each request on its way out. Every counter
// is an atomic add, with no lock and no allocation on any request: two
// clock reads and two adds is all a request pays (three for an error).
//
// The latency of a request is the time its method takes, up to the reply
// being formed: for a READ served from a descriptor, the copy of the data
// too (readTimer).
type Stats struct {
	since       time.Time
	ops         [nOps]opStats
	openFiles   atomic.Int64
	openDirs    atomic.Int64
	passthrough atomic.Int64
	handles     handleBits // the file handles opened in passthrough
}

// Latency buckets: bucket i holds latencies below 2^(i+10) ns (1 µs, 2 µs,
// ... 4.3 s); the last one holds the rest. Error slots: by errno, slot 0
// for a status that is no errno.
const (
	latBuckets = 24
	errnoSlots = 134
)

// opStats has no count of its own: the buckets add up to it, and a
// request pays one add less.
type opStats struct {
	sumNs atomic.Uint64
	lat   [latBuckets]atomic.Uint64
	errs  [errnoSlots]atomic.Uint64
}

// statsOff leaves the collector out of the chain: MIRRORFS_STATS=off, for
// measuring what it costs.
var statsOff = os.Getenv("MIRRORFS_STATS") == "off"

// withStats puts the collector in front of raw, and gives its counters
// (nil when MIRRORFS_STATS=off: then nothing is counted).
func withStats(raw fuse.RawFileSystem) (fuse.RawFileSystem, *Stats) {
	if statsOff {
		return raw, nil
	}
	s := &Stats{since: time.Now()}
	return &statsFS{RawFileSystem: raw, s: s}, s
}

// Stats is the mirror's counters, nil when none are kept.
func (m *Mirror) Stats() *Stats { return m.stats }

// record counts one request of op that took d and ended with st.
func (s *Stats) record(o op, d time.Duration, st fuse.Status) {
	c := &s.ops[o]
	c.sumNs.Add(uint64(d))
	c.lat[latBucket(d)].Add(1)
	if st != fuse.OK {
		slot := int(st)
		if slot <= 0 || slot >= errnoSlots {
			slot = 0
		}
		c.errs[slot].Add(1)
	}
}

func latBucket(d time.Duration) int {
	if d < 0 {
		d = 0
	}
	return min(bits.Len64(uint64(d)>>10), latBuckets-1)
}

// bucketBounds is the range of latencies bucket i holds; the last one
// has no upper bound (hi is its lower bound).
func bucketBounds(i int) (lo, hi time.Duration) {
	if i > 0 {
		lo = time.Duration(1) << (i + 9)
	}
	if i == latBuckets-1 {
		return lo, lo
	}
	return lo, time.Duration(1) << (i + 10)
}

// BucketLimit is the upper bound of latency bucket i, 0 for the last.
func BucketLimit(i int) time.Duration {
	if i == latBuckets-1 {
		return 0
	}
	_, hi := bucketBounds(i)
	return hi
}

// Answered is the number of requests answered since the mount.
func (s *Stats) Answered() uint64 {
	var n uint64
	for i := range s.ops {
		for j := range s.ops[i].lat {
			n += s.ops[i].lat[j].Load()
		}
	}
	return n
}

// OpStat is one operation's counters at one moment.
type OpStat struct {
	Name   string
	Count  uint64
	Sum    time.Duration
	Lat    [latBuckets]uint64 // by bucket (BucketLimit), not cumulative
	Errors map[int]uint64     // by errno (0: a status that is no errno)
}

// Snapshot is the counters at one moment (each read atomically, not all
// at the same instant).
type Snapshot struct {
	Since                                time.Time
	Ops                                  []OpStat // the operations seen, in a fixed order
	OpenFiles, OpenDirs, PassthroughOpen int64
}

// Snapshot reads the counters.
func (s *Stats) Snapshot() Snapshot {
	snap := Snapshot{Since: s.since, OpenFiles: s.openFiles.Load(), OpenDirs: s.openDirs.Load(),
		PassthroughOpen: s.passthrough.Load()}
	for i := range s.ops {
		if o := s.ops[i].read(opNames[i]); o.Count > 0 {
			snap.Ops = append(snap.Ops, o)
		}
	}
	return snap
}

func (c *opStats) read(name string) OpStat {
	o := OpStat{Name: name, Sum: time.Duration(c.sumNs.Load())}
	for i := range c.lat {
		o.Lat[i] = c.lat[i].Load()
		o.Count += o.Lat[i]
	}
	for i := range c.errs {
		if n := c.errs[i].Load(); n > 0 {
			if o.Errors == nil {
				o.Errors = map[int]uint64{}
			}
			o.Errors[i] = n
		}
	}
	return o
}

// Quantile estimates the q-quantile (0 < q ≤ 1) of o's latencies, by
// linear interpolation within the bucket where it falls; in the last,
// unbounded bucket it is that bucket's lower bound.
func (o OpStat) Quantile(q float64) time.Duration {
	var total uint64
	for _, n := range o.Lat {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var below uint64
	for i, n := range o.Lat {
		if n > 0 && float64(below+n) >= rank {
			lo, hi := bucketBounds(i)
			frac := (rank - float64(below)) / float64(n)
			return lo + time.Duration(frac*float64(hi-lo))
		}
		below += n
	}
	lo, _ := bucketBounds(latBuckets - 1)
	return lo
}

// handleBits says, by file handle, which open files are in passthrough,
// without a lock: go-fuse hands out handles as small numbers and reuses
// freed ones, so pages of bits are added as needed (by compare-and-swap)
// and never freed. A handle beyond the last page is not tracked.
type handleBits struct {
	pages [handlePages]atomic.Pointer[[handlePageWords]atomic.Uint64]
}

const (
	handlePageWords = 1024                         // 65536 handles a page
	handlePages     = 256                          // 16 Mi handles in all
	handlesPerPage  = handlePageWords * 64         //
	handleLimit     = handlePages * handlesPerPage //
)

func (h *handleBits) word(fh uint64, grow bool) (*atomic.Uint64, uint64) {
	if fh >= handleLimit {
		return nil, 0
	}
	p := &h.pages[fh/handlesPerPage]
	page := p.Load()
	if page == nil {
		if !grow {
			return nil, 0
		}
		p.CompareAndSwap(nil, new([handlePageWords]atomic.Uint64))
		page = p.Load()
	}
	i := fh % handlesPerPage
	return &page[i/64], 1 << (i % 64)
}

// set marks fh, and says whether it was tracked.
func (h *handleBits) set(fh uint64) bool {
	w, bit := h.word(fh, true)
	if w == nil {
		return false
	}
	w.Or(bit)
	return true
}

// clear unmarks fh, and says whether it was marked.
func (h *handleBits) clear(fh uint64) bool {
	w, bit := h.word(fh, false)
	return w != nil && w.And(^bit)&bit != 0
}

// op is an operation the collector tells apart.
type op uint8

const (
	opLookup op = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	nOps
)

// opNames are the kernel's names of the operations (FUSE_...).
var opNames = [nOps]string{
	"LOOKUP", "FORGET", "GETATTR", "SETATTR", "MKNOD", "MKDIR", "UNLINK", "RMDIR", "RENAME", "LINK",
	"SYMLINK", "READLINK", "ACCESS", "GETXATTR", "LISTXATTR", "SETXATTR", "REMOVEXATTR", "CREATE",
	"TMPFILE", "OPEN", "READ", "LSEEK", "GETLK", "SETLK", "SETLKW", "RELEASE", "WRITE",
	"COPY_FILE_RANGE", "IOCTL", "FLUSH", "FSYNC", "FALLOCATE", "OPENDIR", "READDIR", "READDIRPLUS",
	"RELEASEDIR", "FSYNCDIR", "STATFS", "STATX",
}

// statsFS counts each request it passes on (Stats).
type statsFS struct {
	fuse.RawFileSystem
	s *Stats
}

var _ = (fuse.RawFileSystem)((*statsFS)(nil))

func (w *statsFS) done(o op, t0 time.Time, st fuse.Status) fuse.Status {
	w.s.record(o, time.Since(t0), st)
	return st
}

// opened counts a file opened (or created) with out, when it was.
func (w *statsFS) opened(st fuse.Status, out *fuse.OpenOut) fuse.Status {
	if st != fuse.OK {
		return st
	}
	w.s.openFiles.Add(1)
	if out.OpenFlags&fuse.FOPEN_PASSTHROUGH != 0 && w.s.handles.set(out.Fh) {
		w.s.passthrough.Add(1)
	}
	return st
}

func (w *statsFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	return w.done(opLookup, t0, w.RawFileSystem.Lookup(c, h, name, out))
}

func (w *statsFS) Forget(nodeid, nlookup uint64) {
	t0 := time.Now()
	w.RawFileSystem.Forget(nodeid, nlookup)
	w.done(opForget, t0, fuse.OK)
}

func (w *statsFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t0 := time.Now()
	return w.done(opGetattr, t0, w.RawFileSystem.GetAttr(c, in, out))
}

func (w *statsFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t0 := time.Now()
	return w.done(opSetattr, t0, w.RawFileSystem.SetAttr(c, in, out))
}

func (w *statsFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	return w.done(opMknod, t0, w.RawFileSystem.Mknod(c, in, name, out))
}

func (w *statsFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	return w.done(opMkdir, t0, w.RawFileSystem.Mkdir(c, in, name, out))
}

func (w *statsFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t0 := time.Now()
	return w.done(opUnlink, t0, w.RawFileSystem.Unlink(c, h, name))
}

func (w *statsFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t0 := time.Now()
	return w.done(opRmdir, t0, w.RawFileSystem.Rmdir(c, h, name))
}

func (w *statsFS) Rename(c <-chan struct{}, in *fuse.RenameIn, from, to string) fuse.Status {
	t0 := time.Now()
	return w.done(opRename, t0, w.RawFileSystem.Rename(c, in, from, to))
}

func (w *statsFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	return w.done(opLink, t0, w.RawFileSystem.Link(c, in, name, out))
}

func (w *statsFS) Symlink(c <-chan struct{}, h *fuse.InHeader, to, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	return w.done(opSymlink, t0, w.RawFileSystem.Symlink(c, h, to, name, out))
}

func (w *statsFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t0 := time.Now()
	b, st := w.RawFileSystem.Readlink(c, h)
	return b, w.done(opReadlink, t0, st)
}

func (w *statsFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	t0 := time.Now()
	return w.done(opAccess, t0, w.RawFileSystem.Access(c, in))
}

func (w *statsFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := w.RawFileSystem.GetXAttr(c, h, attr, dest)
	return n, w.done(opGetxattr, t0, st)
}

func (w *statsFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := w.RawFileSystem.ListXAttr(c, h, dest)
	return n, w.done(opListxattr, t0, st)
}

func (w *statsFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t0 := time.Now()
	return w.done(opSetxattr, t0, w.RawFileSystem.SetXAttr(c, in, attr, data))
}

func (w *statsFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t0 := time.Now()
	return w.done(opRemovexattr, t0, w.RawFileSystem.RemoveXAttr(c, h, attr))
}

func (w *statsFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t0 := time.Now()
	return w.opened(w.done(opCreate, t0, w.RawFileSystem.Create(c, in, name, out)), &out.OpenOut)
}

func (w *statsFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	t0 := time.Now()
	return w.opened(w.done(opTmpfile, t0, w.RawFileSystem.Tmpfile(c, in, out)), &out.OpenOut)
}

func (w *statsFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t0 := time.Now()
	return w.opened(w.done(opOpen, t0, w.RawFileSystem.Open(c, in, out)), out)
}

func (w *statsFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t0 := time.Now()
	res, st := w.RawFileSystem.Read(c, in, buf)
	if st != fuse.OK || res == nil || !deferred(res) {
		return res, w.done(opRead, t0, st)
	}
	return newReadTimer(res, w.s, t0), st
}

func (w *statsFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t0 := time.Now()
	return w.done(opLseek, t0, w.RawFileSystem.Lseek(c, in, out))
}

func (w *statsFS) GetLk(c <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t0 := time.Now()
	return w.done(opGetlk, t0, w.RawFileSystem.GetLk(c, in, out))
}

func (w *statsFS) SetLk(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t0 := time.Now()
	return w.done(opSetlk, t0, w.RawFileSystem.SetLk(c, in))
}

func (w *statsFS) SetLkw(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t0 := time.Now()
	return w.done(opSetlkw, t0, w.RawFileSystem.SetLkw(c, in))
}

// Release unmarks the handle before go-fuse frees it: once freed, its
// number may be handed to the next open at once.
func (w *statsFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	t0 := time.Now()
	if w.s.handles.clear(in.Fh) {
		w.s.passthrough.Add(-1)
	}
	w.s.openFiles.Add(-1)
	w.RawFileSystem.Release(c, in)
	w.done(opRelease, t0, fuse.OK)
}

func (w *statsFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := w.RawFileSystem.Write(c, in, data)
	return n, w.done(opWrite, t0, st)
}

// Writev is go-fuse's first choice for a WRITE; on ENOSYS it calls Write,
// which counts the request.
func (w *statsFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := w.RawFileSystem.Writev(c, in, data)
	if st == fuse.ENOSYS {
		return n, st
	}
	return n, w.done(opWrite, t0, st)
}

func (w *statsFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := w.RawFileSystem.CopyFileRange(c, in)
	return n, w.done(opCopyFileRange, t0, st)
}

func (w *statsFS) Ioctl(c <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	t0 := time.Now()
	return w.done(opIoctl, t0, w.RawFileSystem.Ioctl(c, in, inbuf, out, outbuf))
}

func (w *statsFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t0 := time.Now()
	return w.done(opFlush, t0, w.RawFileSystem.Flush(c, in))
}

func (w *statsFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t0 := time.Now()
	return w.done(opFsync, t0, w.RawFileSystem.Fsync(c, in))
}

func (w *statsFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t0 := time.Now()
	return w.done(opFallocate, t0, w.RawFileSystem.Fallocate(c, in))
}

func (w *statsFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t0 := time.Now()
	st := w.done(opOpendir, t0, w.RawFileSystem.OpenDir(c, in, out))
	if st == fuse.OK {
		w.s.openDirs.Add(1)
	}
	return st
}

func (w *statsFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t0 := time.Now()
	return w.done(opReaddir, t0, w.RawFileSystem.ReadDir(c, in, out))
}

func (w *statsFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t0 := time.Now()
	return w.done(opReaddirplus, t0, w.RawFileSystem.ReadDirPlus(c, in, out))
}

func (w *statsFS) ReleaseDir(in *fuse.ReleaseIn) {
	t0 := time.Now()
	w.s.openDirs.Add(-1)
	w.RawFileSystem.ReleaseDir(in)
	w.done(opReleasedir, t0, fuse.OK)
}

func (w *statsFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t0 := time.Now()
	return w.done(opFsyncdir, t0, w.RawFileSystem.FsyncDir(c, in))
}

func (w *statsFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t0 := time.Now()
	return w.done(opStatfs, t0, w.RawFileSystem.StatFs(c, h, out))
}

func (w *statsFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t0 := time.Now()
	return w.done(opStatx, t0, w.RawFileSystem.Statx(c, in, out))
}

// go-fuse writes a result with Slices (or Readv) straight to the kernel;
// one of those is complete when the method returns.
type (
	sliced interface {
		Slices() ([][]byte, fuse.Status)
	}
	readv interface {
		Readv(dst [][]byte) (int, fuse.Status)
	}
)

// deferred says whether res reads its data only when asked for its
// Bytes: a descriptor's (LoopbackFile's Read), whose pread, and its error,
// come after the method returned.
func deferred(res fuse.ReadResult) bool {
	_, s := res.(sliced)
	_, v := res.(readv)
	return !s && !v
}

// readTimer counts a READ once its data is read: go-fuse calls Bytes (the
// mirror turns splicing off, so nothing asks for the descriptor behind a
// result) and then Done. Timers are pooled: a READ allocates nothing.
type readTimer struct {
	fuse.ReadResult
	s       *Stats
	t0      time.Time
	counted bool
}

var readTimers = sync.Pool{New: func() any { return new(readTimer) }}

func newReadTimer(res fuse.ReadResult, s *Stats, t0 time.Time) *readTimer {
	r := readTimers.Get().(*readTimer)
	*r = readTimer{ReadResult: res, s: s, t0: t0}
	return r
}

func (r *readTimer) Bytes(buf []byte) ([]byte, fuse.Status) {
	b, st := r.ReadResult.Bytes(buf)
	if !r.counted {
		r.counted = true
		r.s.record(opRead, time.Since(r.t0), st)
	}
	return b, st
}

func (r *readTimer) Done() {
	if !r.counted {
		r.s.record(opRead, time.Since(r.t0), fuse.OK)
	}
	r.ReadResult.Done()
	*r = readTimer{}
	readTimers.Put(r)
}
