package fs

import (
	"encoding/binary"
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"
)

// fanEvent lays out one fanotify event of pid, with a DFID_NAME record.
func fanEvent(mask uint64, pid int32, fsid [2]int32, htype int32, handle []byte, name string) []byte {
	rec := binary.NativeEndian.AppendUint32(nil, uint32(fsid[0]))
	rec = binary.NativeEndian.AppendUint32(rec, uint32(fsid[1]))
	rec = binary.NativeEndian.AppendUint32(rec, uint32(len(handle)))
	rec = binary.NativeEndian.AppendUint32(rec, uint32(htype))
	rec = append(append(append(rec, handle...), name...), 0)
	info := []byte{unix.FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0}
	binary.NativeEndian.PutUint16(info[2:], uint16(fanInfoHeaderLen+len(rec)))
	info = append(info, rec...)
	ev := make([]byte, fanMetaLen)
	binary.NativeEndian.PutUint32(ev[0:], uint32(fanMetaLen+len(info)))
	ev[4] = unix.FANOTIFY_METADATA_VERSION
	binary.NativeEndian.PutUint16(ev[6:], fanMetaLen)
	binary.NativeEndian.PutUint64(ev[8:], mask)
	binary.NativeEndian.PutUint32(ev[16:], ^uint32(0)) // FAN_NOFD
	binary.NativeEndian.PutUint32(ev[20:], uint32(pid))
	return append(ev, info...)
}

// TestParseFanotify: events of the daemon's own pid are skipped, and a
// merged event (a file made and written before the batch was read) is
// both a name and a content change.
func TestParseFanotify(t *testing.T) {
	dir := &node{}
	fsid, handle := [2]int32{7, 9}, []byte{1, 2, 3, 4, 5, 6, 7, 8}
	w := &watcher{self: 100, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		folders: map[string]*node{fidBytes(fsid, 1, handle): dir}, keys: map[*node]string{}}
	buf := fanEvent(unix.FAN_CREATE|unix.FAN_MODIFY, 200, fsid, 1, handle, "f")
	buf = append(buf, fanEvent(unix.FAN_DELETE, 100, fsid, 1, handle, "own")...)
	buf = append(buf, fanEvent(unix.FAN_ATTRIB|unix.FAN_ONDIR, 200, fsid, 1, handle, ".")...)
	buf = append(buf, fanEvent(unix.FAN_DELETE, 200, fsid, 1, []byte{9}, "elsewhere")...)
	b := batch{}
	w.parseFanotify(buf, b)
	c := b[dir]
	if len(b) != 1 || c == nil {
		t.Fatalf("batch %v", b)
	}
	if gone, ok := c.names["f"]; !ok || gone || !c.content["f"] {
		t.Errorf("made and written: names %v content %v", c.names, c.content)
	}
	if _, ok := c.names["own"]; ok {
		t.Error("the daemon's own change was noted")
	}
	if !c.self {
		t.Error("a change of the folder itself was not noted")
	}
}
