package fs

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// The kernel caches what the mirror tells it (names, attributes, data,
// listings) for the cache timeouts, and knows nothing of a change made on
// SOURCE directly. The watcher watches each folder the mirror keeps a
// descriptor of (locate.go: the root and every folder the kernel knows), and
// tells the kernel at once what changed underneath: a name made, removed or
// renamed drops that entry and the folder's listing; a file written or
// changed drops its attributes and cached data (which is also what makes a
// shared mmap of it and a held descriptor see the change).
//
// fanotify tells whose change it is: the process that made it. Changes the
// daemon makes itself are skipped, the kernel already knows them. inotify,
// the fallback, cannot tell: it sends a notification for the daemon's own
// changes too, which costs a round trip and a fresh GETATTR, never a wrong
// answer. Notifications go out from the watcher's own goroutine, never from
// within a request (the kernel may wait for that request to end first).

// Watch modes (-o watch=).
const (
	WatchAuto     = "auto" // fanotify, else inotify
	WatchFanotify = "fanotify"
	WatchInotify  = "inotify"
	WatchOff      = "off" // the cache timeouts alone
)

// What a watched folder is asked to report. Not FAN_CLOSE_WRITE: every
// write is a FAN_MODIFY already, and through passthrough the kernel closes
// the backing file in the closing user's context, so that each close of a
// file written through the mirror would come back as a change on SOURCE.
// (A writer through mmap on SOURCE reports nothing at all, and usually
// closes its descriptor before it writes.)
const (
	fanMask = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
		unix.FAN_MODIFY | unix.FAN_ATTRIB | unix.FAN_EVENT_ON_CHILD | unix.FAN_ONDIR
	inMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
		unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_ONLYDIR
	fanNames   = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO
	fanGone    = unix.FAN_DELETE | unix.FAN_MOVED_FROM
	fanContent = unix.FAN_MODIFY | unix.FAN_ATTRIB
	inContent  = unix.IN_MODIFY | unix.IN_ATTRIB
	inNames    = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO
	inGone     = unix.IN_DELETE | unix.IN_MOVED_FROM
)

// watcher watches SOURCE's kept folders with one fanotify group or inotify
// instance, fd; nil watches nothing.
type watcher struct {
	kind string // WatchFanotify or WatchInotify
	fd   int
	wake int // an eventfd: written to stop the reader
	log  *slog.Logger
	self int32 // the daemon's pid: its own changes are skipped
	done chan struct{}

	mu      sync.Mutex
	folders map[string]*node // watch key (fid or wd) -> folder
	keys    map[*node]string
	files   map[string]*node // fid or wd -> open file: found as itself, named or not
	fileKey map[*node]string
	refused bool // a mark was refused (limits): logged once
	sent    int  // notifications sent, for the debug log and tests
}

// newWatcher opens the watcher mode asks for; it returns nil (and why)
// when none runs. A mode named explicitly that cannot run is an error.
func newWatcher(mode string, log *slog.Logger) (*watcher, string, error) {
	if mode == WatchOff {
		return nil, "off", nil
	}
	w := &watcher{log: log, self: int32(os.Getpid()), done: make(chan struct{}),
		folders: map[string]*node{}, keys: map[*node]string{},
		files: map[string]*node{}, fileKey: map[*node]string{}}
	var errF, errI error
	if mode == "" || mode == WatchAuto || mode == WatchFanotify {
		// Inode marks with file handles: open to users who are not root
		// (Linux 5.13), and the pid of another's change is hidden from
		// them, not the daemon's own. FAN_REPORT_FID adds the changed
		// file's own handle to the folder's and the name: a file open
		// through the mirror that lost its name (renamed over, unlinked)
		// is still written through descriptors held on SOURCE, and its
		// old name now leads to another file (addFile).
		w.kind = WatchFanotify
		w.fd, errF = unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_DFID_NAME|unix.FAN_REPORT_FID|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY)
		if errF == nil || mode == WatchFanotify {
			return w.open(errF)
		}
	}
	w.kind = WatchInotify
	w.fd, errI = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if errI != nil && mode == WatchInotify {
		return w.open(errI)
	}
	if errI != nil {
		return nil, fmt.Sprintf("off (fanotify: %v; inotify: %v)", errF, errI), nil
	}
	w, _, err := w.open(nil)
	if err != nil || errF == nil {
		return w, w.kind, err
	}
	return w, fmt.Sprintf("inotify (fanotify: %v)", errF), nil
}

// open finishes a watcher whose kernel object was made with error err.
func (w *watcher) open(err error) (*watcher, string, error) {
	if err != nil {
		return nil, "", fmt.Errorf("watch=%s: %w", w.kind, err)
	}
	w.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(w.fd)
		return nil, "", fmt.Errorf("watch=%s: eventfd: %w", w.kind, err)
	}
	return w, w.kind, nil
}

// add watches the folder n keeps the descriptor fd (O_PATH) of. A mark
// refused (the limits of /proc/sys/fs/{fanotify,inotify}) leaves the folder
// to the cache timeouts.
func (w *watcher) add(n *node, fd int) {
	if w == nil {
		return
	}
	key, err := w.mark(fd)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if !w.refused {
			w.refused = true
			w.log.Warn("watch: a folder is not watched; changes on SOURCE show there after the cache timeouts",
				"watch", w.kind, "err", err)
		}
		return
	}
	if old, ok := w.keys[n]; ok && old != key {
		delete(w.folders, old)
	}
	w.folders[key], w.keys[n] = n, key
}

// mark watches the folder at fd and returns the key its events carry.
// fanotify is given the descriptor and ".", not a path resolved again (an
// O_PATH descriptor without a path is refused); inotify only takes a path,
// /proc's link to the descriptor itself.
func (w *watcher) mark(fd int) (string, error) {
	if w.kind == WatchInotify {
		wd, err := unix.InotifyAddWatch(w.fd, fmt.Sprintf("/proc/self/fd/%d", fd), inMask)
		return wdKey(int32(wd)), err
	}
	key, err := fidKey(fd)
	if err != nil {
		return "", err
	}
	return key, unix.FanotifyMark(w.fd, unix.FAN_MARK_ADD|unix.FAN_MARK_INODE, fanMask, fd, ".")
}

// watchListing watches n's folder before the kernel keeps its listing: a
// folder only listed keeps no descriptor of its own (acquire) until a
// lookup in it, and would not be watched.
func (n *node) watchListing() {
	if n.m.watch == nil {
		return
	}
	if r, errno := n.acquire(); errno == 0 {
		r.release()
	}
}

// remove stops watching n's folder, whose descriptor fd is still open.
func (w *watcher) remove(n *node, fd int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	key, ok := w.keys[n]
	delete(w.keys, n)
	if ok && w.folders[key] == n {
		delete(w.folders, key)
	} else {
		ok = false // another node holds the folder's watch now
	}
	w.mu.Unlock()
	if !ok {
		return
	}
	if w.kind == WatchInotify {
		unix.InotifyRmWatch(w.fd, uint32(binary.LittleEndian.Uint32([]byte(key))))
		return
	}
	unix.FanotifyMark(w.fd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_INODE, fanMask, fd, ".")
}

// addFile knows n, a file just opened at fd, as itself while it is open:
// by its handle (fanotify reports it with each change), or by a watch of
// the file itself (inotify), so that a change reaches n whatever its name
// is then. An open file is the only kind that needs it: the kernel keeps
// nothing of a file with no name that nobody holds open.
func (w *watcher) addFile(n *node, fd int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	_, known := w.fileKey[n]
	w.mu.Unlock()
	if known {
		return
	}
	key, err := w.fileMark(fd)
	if err != nil {
		return // left to its name, as before
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.files[key], w.fileKey[n] = n, key
}

// fileMark is the key the changes of the file open at fd come with.
func (w *watcher) fileMark(fd int) (string, error) {
	if w.kind == WatchFanotify {
		return fidKey(fd)
	}
	wd, err := unix.InotifyAddWatch(w.fd, fmt.Sprintf("/proc/self/fd/%d", fd), inContent)
	return wdKey(int32(wd)), err
}

// removeFile forgets n once its last open file is closed.
func (w *watcher) removeFile(n *node) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	key, ok := w.fileKey[n]
	if !ok {
		return
	}
	delete(w.fileKey, n)
	if w.files[key] == n {
		delete(w.files, key)
		if w.kind == WatchInotify {
			unix.InotifyRmWatch(w.fd, binary.LittleEndian.Uint32([]byte(key)))
		}
	}
}

func (w *watcher) openFile(key string) *node {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.files[key]
}

func wdKey(wd int32) string {
	return string(binary.LittleEndian.AppendUint32(nil, uint32(wd)))
}

// fidKey is the folder's fsid and file handle, as fanotify reports them.
func fidKey(fd int) (string, error) {
	var s unix.Statfs_t
	if err := unix.Fstatfs(fd, &s); err != nil {
		return "", err
	}
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return "", err
	}
	return fidBytes(s.Fsid.Val, h.Type(), h.Bytes()), nil
}

func fidBytes(fsid [2]int32, typ int32, handle []byte) string {
	b := make([]byte, 0, 12+len(handle))
	b = binary.LittleEndian.AppendUint32(b, uint32(fsid[0]))
	b = binary.LittleEndian.AppendUint32(b, uint32(fsid[1]))
	b = binary.LittleEndian.AppendUint32(b, uint32(typ))
	return string(append(b, handle...))
}

// start reads events until stop; root is the mirror's root, watched first.
func (w *watcher) start(root *node) {
	if w == nil {
		return
	}
	w.add(root, root.m.rootFd)
	go w.run(root)
}

// stop ends the reader and closes the watch; every mark goes with it.
func (w *watcher) stop() {
	if w == nil {
		return
	}
	unix.Write(w.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-w.done
	w.close()
}

// close closes a watch whose reader does not run.
func (w *watcher) close() {
	if w != nil {
		unix.Close(w.fd)
		unix.Close(w.wake)
	}
}

// batchWindow is how long the reader lets events gather before it reads
// them: a share of the latency target (10 ms), for far fewer wake-ups.
const batchWindow = time.Millisecond

// run reads batches of events; each batch is sent to the kernel with one
// notification per entry and node, however many events it holds (a write
// of a large file is many FAN_MODIFY).
func (w *watcher) run(root *node) {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			w.log.Error("watch: poll", "err", err)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		// Events that come in a burst (a write is a FAN_MODIFY each)
		// are read and sent as one batch, and the kernel merges those of
		// one file meanwhile: one wake-up per burst, not per write.
		time.Sleep(batchWindow)
		n, err := unix.Read(w.fd, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			w.log.Error("watch: read", "err", err)
			return
		}
		b := batch{}
		if w.kind == WatchInotify {
			w.parseInotify(buf[:n], b)
		} else {
			w.parseFanotify(buf[:n], b)
		}
		w.send(root, b)
	}
}

// batch is what a read of events changed, by folder.
type batch map[*node]*changes

// changes of one folder: its entries (true: the name is gone), its
// children's contents, and the folder itself. The nil folder: events were
// lost.
type changes struct {
	names   map[string]bool
	content map[string]bool
	self    bool
	own     bool // n is an open file whose content changed (noteOwnFid)
}

func (b batch) of(n *node) *changes {
	c := b[n]
	if c == nil {
		c = &changes{names: map[string]bool{}, content: map[string]bool{}}
		b[n] = c
	}
	return c
}

// note records one event of folder n on name ("" or ".": n itself);
// names says whether it is (also: fanotify merges the events of one file
// queued together) one of a name made, removed or renamed, gone whether
// that name was removed or renamed away, content whether the file changed.
func (b batch) note(n *node, name string, names, gone, content bool) {
	c := b.of(n)
	switch {
	case name == "" || name == ".":
		c.self = true
		return
	case names:
		c.names[name] = gone
	}
	if content {
		c.content[name] = true
	}
}

func (w *watcher) folder(key string) *node {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.folders[key]
}

// parseInotify notes each inotify event of buf in b.
func (w *watcher) parseInotify(buf []byte, b batch) {
	for len(buf) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(buf[0:]))
		mask := binary.NativeEndian.Uint32(buf[4:])
		size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[12:]))
		if size > len(buf) {
			return
		}
		name := cString(buf[unix.SizeofInotifyEvent:size])
		buf = buf[size:]
		if mask&unix.IN_Q_OVERFLOW != 0 {
			b[nil] = nil // everything may have changed
			continue
		}
		if mask&unix.IN_IGNORED != 0 {
			w.forget(wdKey(wd))
			continue
		}
		if n := w.folder(wdKey(wd)); n != nil {
			b.note(n, name, mask&inNames != 0, mask&inGone != 0, mask&inContent != 0)
		} else if n := w.openFile(wdKey(wd)); n != nil && mask&inContent != 0 {
			b.of(n).own = true
		}
	}
}

// forget drops a watch the kernel removed (its folder is gone).
func (w *watcher) forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.folders[key]; n != nil {
		delete(w.folders, key)
		delete(w.keys, n)
	}
	if n := w.files[key]; n != nil {
		delete(w.files, key)
		delete(w.fileKey, n)
	}
}

// fanotify's event metadata and info record header, as the kernel lays
// them out.
const (
	fanMetaLen       = 24
	fanInfoHeaderLen = 4
)

// parseFanotify notes each fanotify event of buf in b, except the
// daemon's own.
func (w *watcher) parseFanotify(buf []byte, b batch) {
	for len(buf) >= fanMetaLen {
		size := int(binary.NativeEndian.Uint32(buf[0:]))
		metaLen := int(binary.NativeEndian.Uint16(buf[6:]))
		if size < fanMetaLen || size > len(buf) || metaLen > size {
			return
		}
		mask := binary.NativeEndian.Uint64(buf[8:])
		pid := int32(binary.NativeEndian.Uint32(buf[20:]))
		info := buf[metaLen:size]
		buf = buf[size:]
		switch {
		case mask&unix.FAN_Q_OVERFLOW != 0:
			b[nil] = nil
		case pid != w.self:
			w.noteFid(info, mask, b)
		}
	}
}

// noteFid notes the event whose info records are info.
func (w *watcher) noteFid(info []byte, mask uint64, b batch) {
	for len(info) >= fanInfoHeaderLen {
		typ, size := info[0], int(binary.NativeEndian.Uint16(info[2:]))
		if size < fanInfoHeaderLen || size > len(info) {
			return
		}
		rec := info[fanInfoHeaderLen:size]
		info = info[size:]
		known := typ == unix.FAN_EVENT_INFO_TYPE_DFID_NAME || typ == unix.FAN_EVENT_INFO_TYPE_DFID || typ == unix.FAN_EVENT_INFO_TYPE_FID
		if !known || len(rec) < 16 {
			continue
		}
		fsid := [2]int32{int32(binary.NativeEndian.Uint32(rec[0:])), int32(binary.NativeEndian.Uint32(rec[4:]))}
		hlen := int(binary.NativeEndian.Uint32(rec[8:]))
		htype := int32(binary.NativeEndian.Uint32(rec[12:]))
		if 16+hlen > len(rec) {
			continue
		}
		key := fidBytes(fsid, htype, rec[16:16+hlen])
		if typ == unix.FAN_EVENT_INFO_TYPE_FID {
			w.noteOwnFid(key, mask, b)
			continue
		}
		n := w.folder(key)
		if n == nil {
			continue
		}
		var name string
		if typ == unix.FAN_EVENT_INFO_TYPE_DFID_NAME {
			name = cString(rec[16+hlen:])
		}
		b.note(n, name, mask&fanNames != 0, mask&fanGone != 0, mask&fanContent != 0)
	}
}

// noteOwnFid notes the event whose object, a file or a watched folder
// itself, has the handle key.
func (w *watcher) noteOwnFid(key string, mask uint64, b batch) {
	if n := w.folder(key); n != nil {
		b.note(n, "", false, false, false)
		return
	}
	if n := w.openFile(key); n != nil && mask&fanContent != 0 {
		b.of(n).own = true
	}
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// send tells the kernel what b changed.
func (w *watcher) send(root *node, b batch) {
	sent := 0
	if _, lost := b[nil]; lost {
		sent += dropAll(root.EmbeddedInode())
		delete(b, nil)
	}
	fresh := map[*node]bool{} // files whose content is dropped: once each
	for n, c := range b {
		sent += c.send(n, fresh)
	}
	if sent == 0 {
		return
	}
	w.mu.Lock()
	w.sent += sent
	total := w.sent
	w.mu.Unlock()
	w.log.Debug("watch: changes on SOURCE sent to the kernel", "notifications", sent, "total", total)
}

// send tells the kernel what changed in folder n, or in n's own file; it
// returns how many notifications that took. fresh holds the files whose
// content was dropped already in this batch.
func (c *changes) send(n *node, fresh map[*node]bool) int {
	sent := 0
	// The name is dropped from the kernel's cache, never deleted there
	// (NotifyDelete): the news comes late, and by then the name may lead
	// to a newer entry made through the mirror, which a delete would kill
	// (a folder marked dead takes no new entries: ENOENT). A dropped name
	// is only looked up again. What the old entry's holders see (an nlink
	// of 0) comes with its attributes, dropped alike: a newer file of that
	// name loses nothing but a GETATTR.
	for name, gone := range c.names {
		n.NotifyEntry(name)
		sent++
		if child := n.GetChild(name); gone && child != nil {
			child.NotifyContent(-1, 0) // attributes only
			sent++
		}
	}
	for name := range c.content {
		// Even a name made in this batch: the kernel may have looked it
		// up, and read the file, before the batch was read.
		if child := n.GetChild(name); child != nil {
			sent += child.Operations().(*node).dropContent(fresh)
		}
	}
	if c.own {
		sent += n.dropContent(fresh)
	}
	if len(c.names) > 0 || c.self {
		// The kept listing goes with the folder's attributes (listingFlags).
		n.listed.Store(nil)
		n.NotifyContent(0, 0)
		sent++
	}
	return sent
}

// dropContent drops the kernel's attributes and pages of n's file, once
// per batch (fresh), and gives it the size (storeSize).
func (n *node) dropContent(fresh map[*node]bool) int {
	if fresh[n] {
		return 0
	}
	fresh[n] = true
	n.NotifyContent(0, 0)
	return n.storeSize()
}

// storeSize gives the kernel the size of n's file, if it is open: a
// shared map of it reaches only as far as the size the kernel holds, and a
// page fault never asks for attributes, so a file grown on SOURCE would
// stay cut short in every map (SIGBUS past the old end) until something
// stats it. Storing the file's last byte in the kernel's cache is the one
// notification that also sets the size. It is read from a descriptor the
// mirror already holds, reopened for reading; a file closed everywhere
// needs nothing (the next open asks for attributes). It returns how many
// notifications that took, counting the invalidation before it.
func (n *node) storeSize() int {
	if n.m.passthrough() {
		return 1 // a map of a passthrough file is the backing file's: its size is SOURCE's
	}
	l, errno := n.openLoc()
	if errno != 0 {
		return 1
	}
	defer l.done()
	// O_NOATIME: the daemon's read of the byte is no access by anyone.
	// Not allowed on a file not the daemon's own without CAP_FOWNER: then
	// no store (a read would change what the file shows).
	fd, err := unix.Open(l.proc(), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOATIME, 0)
	if err != nil {
		return 1
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 {
		return 1
	}
	last := make([]byte, 1)
	if got, err := unix.Pread(fd, last, st.Size-1); err != nil || got != 1 {
		return 1
	}
	n.WriteCache(st.Size-1, last)
	return 2
}

// dropAll drops everything the kernel caches of dir and below it, when
// events were lost.
func dropAll(dir *gofs.Inode) int {
	sent := 1
	dir.NotifyContent(0, 0)
	if n, ok := dir.Operations().(*node); ok {
		n.listed.Store(nil)
	}
	for name, child := range dir.Children() {
		dir.NotifyEntry(name)
		sent++
		if child.IsDir() {
			sent += dropAll(child)
		}
	}
	return sent
}

// Watch says which watcher runs: "fanotify", "inotify", or "off" (and why).
func (m *Mirror) Watch() string { return m.watching }
