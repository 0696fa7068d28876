package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Sharing SOURCE, continued: a change asked of a node lands on the node's
// own file; a lock taken through the mirror is a point where the mirror
// side sees what SOURCE wrote; an appending descriptor can be mapped.

// fileState is what the tests compare of a file: mode, size, mtime and
// one extended attribute.
type fileState struct {
	mode  uint32
	size  int64
	mtime int64
	xattr string
}

func stateOf(t *testing.T, fd int) fileState {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Fgetxattr(fd, "user.k", buf)
	if err != nil {
		n = 0
	}
	return fileState{st.Mode & 0o7777, st.Size, st.Mtim.Sec, string(buf[:n])}
}

// TestCoherenceChangesLandOnTheNodesFile: f replaced on SOURCE (write tmp;
// mv tmp f) while the kernel still knows the old f. A chmod, utimes or
// setxattr through a descriptor held on the old f must not change the new
// file; a chmod, truncate, utimes or setxattr of f by name lands on the new
// file (after the kernel looks f up again), and the old one is untouched.
func TestCoherenceChangesLandOnTheNodesFile(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"f": "old content"})
		e.start(mode...)
		s, m := filepath.Join(e.src, "f"), filepath.Join(e.mnt, "f")
		held, err := os.OpenFile(m, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		old, err := os.Open(s) // to look at the old file once it has no name
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		oldBefore := stateOf(t, int(old.Fd()))
		replaceByRename(t, s, "NEW-CONTENT, longer")
		repl, err := os.Open(s)
		if err != nil {
			t.Fatal(err)
		}
		defer repl.Close()
		newBefore := stateOf(t, int(repl.Fd()))

		// By the held descriptor: the kernel asks for the old node, by no file.
		fd := int(held.Fd())
		errs := []error{
			unix.Fchmod(fd, 0o600),
			unix.Futimes(fd, []unix.Timeval{{Sec: 1000}, {Sec: 1000}}),
			unix.Fsetxattr(fd, "user.k", []byte("held"), 0),
		}
		for i, err := range errs {
			if err != nil && !errors.Is(err, syscall.ESTALE) {
				t.Errorf("change %d by the held descriptor: %v, want done on its own file or ESTALE", i, err)
			}
		}
		if got := stateOf(t, int(repl.Fd())); got != newBefore {
			t.Errorf("the file that replaced f was changed through a descriptor of the old f: %+v, was %+v", got, newBefore)
		}

		// By name: a fresh lookup, the new file.
		stamp := time.Unix(2000, 0)
		for what, err := range map[string]error{
			"chmod":    os.Chmod(m, 0o640),
			"truncate": os.Truncate(m, 3),
			"setxattr": unix.Setxattr(m, "user.k", []byte("name"), 0),
		} {
			if err != nil {
				t.Errorf("%s of f by name: %v", what, err)
			}
		}
		if err := os.Chtimes(m, stamp, stamp); err != nil { // after truncate, which moves mtime
			t.Errorf("utimes of f by name: %v", err)
		}
		if got, want := stateOf(t, int(repl.Fd())), (fileState{0o640, 3, 2000, "name"}); got != want {
			t.Errorf("the new f after changes by name: %+v, want %+v", got, want)
		}
		if got := stateOf(t, int(old.Fd())); got.size != oldBefore.size || got.mtime != oldBefore.mtime || got.xattr == "name" || got.mode == 0o640 {
			t.Errorf("the old f was changed by name: %+v, was %+v", got, oldBefore)
		}
		var st unix.Stat_t
		if err := unix.Stat(m, &st); err != nil || st.Size != 3 || st.Mode&0o777 != 0o640 {
			t.Errorf("stat of f through the mirror: size %d, mode %o (%v); want 3, 640", st.Size, st.Mode&0o777, err)
		}
	})
}

// TestCoherenceReadlinkStatfsAfterReplace: a symlink replaced on SOURCE
// and a file replaced so, while the kernel knows the old ones; readlink
// and statfs by name answer
// for what is there now (the kernel looks the name up again on ESTALE).
func TestCoherenceReadlinkStatfsAfterReplace(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		if err := os.Symlink("old-target", filepath.Join(e.src, "l")); err != nil {
			t.Fatal(err)
		}
		writeFiles(t, e.src, map[string]string{"g": "old"})
		e.start(mode...)
		m := filepath.Join(e.mnt, "l")
		var sf unix.Statfs_t
		if err := unix.Statfs(filepath.Join(e.mnt, "g"), &sf); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(m); err != nil || got != "old-target" {
			t.Fatalf("readlink before: %q, %v", got, err)
		}
		tmp := filepath.Join(e.src, "l.tmp")
		if err := os.Symlink("new-target", tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(e.src, "l")); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(m); err != nil || got != "new-target" {
			t.Errorf("readlink after the replace: %q, %v; want new-target", got, err)
		}
		replaceByRename(t, filepath.Join(e.src, "g"), "new")
		if err := unix.Statfs(filepath.Join(e.mnt, "g"), &sf); err != nil {
			t.Errorf("statfs of a file replaced on SOURCE: %v", err)
		}
	})
}

// lockers take a shared lock on an open file, as programs that share a
// file across the two sides do before they read it.
var lockers = map[string]func(fd int) error{
	"fcntl": func(fd int) error {
		return unix.FcntlFlock(uintptr(fd), unix.F_SETLKW, &unix.Flock_t{Type: unix.F_RDLCK})
	},
	"flock": func(fd int) error { return unix.Flock(fd, unix.LOCK_SH) },
}

// TestCoherenceLockSeesSourceWrites: a lock taken through the mirror is
// where the mirror side catches up with SOURCE (as on NFS): a file read
// through the mirror, then rewritten in place and grown on SOURCE with its
// mtime put back (nothing the kernel would notice), reads and stats as
// SOURCE has it once a lock on it is granted, within the cache timeouts.
func TestCoherenceLockSeesSourceWrites(t *testing.T) {
	for name, lock := range lockers {
		t.Run(name, func(t *testing.T) {
			bothModes(t, func(t *testing.T, mode ...string) {
				e := newEnv(t)
				writeFiles(t, e.src, map[string]string{"f": "aaaa"})
				e.start(mode...)
				s := filepath.Join(e.src, "f")
				st0, err := os.Stat(s)
				if err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(filepath.Join(e.mnt, "f"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if got := preadAll(f); got != "aaaa" {
					t.Fatalf("before: %q", got)
				}
				if fi, err := f.Stat(); err != nil || fi.Size() != 4 {
					t.Fatalf("before: %v, %v", fi, err)
				}
				w, err := os.OpenFile(s, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.WriteAt([]byte("bbbbcc"), 0); err != nil {
					t.Fatal(err)
				}
				w.Close()
				if err := os.Chtimes(s, st0.ModTime(), st0.ModTime()); err != nil {
					t.Fatal(err)
				}
				if err := lock(int(f.Fd())); err != nil {
					t.Fatal(err)
				}
				if got := preadAll(f); got != "bbbbcc" {
					t.Errorf("read under the lock: %q, want SOURCE's %q", got, "bbbbcc")
				}
				if fi, err := f.Stat(); err != nil || fi.Size() != 6 {
					t.Errorf("fstat under the lock: %v, %v; want size 6", fi, err)
				}
			})
		})
	}
}

// TestCoherenceAppendingDescriptorMapsShared: a file opened O_RDWR|O_APPEND
// through the mirror can be mapped shared (without passthrough its
// descriptor is direct I/O, which the kernel maps only when the daemon
// allows it). A store through the map lands in place on SOURCE, not at the
// end; an append through the descriptor lands at SOURCE's end, and the map
// shows it.
func TestCoherenceAppendingDescriptorMapsShared(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"f": "0123456789"})
		e.start(mode...)
		s := filepath.Join(e.src, "f")
		f, err := os.OpenFile(filepath.Join(e.mnt, "f"), os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		mapped, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap MAP_SHARED of an O_RDWR|O_APPEND descriptor: %v", err)
		}
		defer unix.Munmap(mapped)
		if string(mapped[:10]) != "0123456789" {
			t.Fatalf("mapped: %q", mapped[:10])
		}
		copy(mapped[2:], "ab")
		if err := unix.Msync(mapped, unix.MS_SYNC); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(s); err != nil || string(b) != "01ab456789" {
			t.Fatalf("SOURCE after a store through the map: %q, %v; want %q", b, err, "01ab456789")
		}
		if err := appendLines(s, "S", 1); err != nil { // SOURCE grows meanwhile
			t.Fatal(err)
		}
		if _, err := f.WriteString("M"); err != nil {
			t.Fatal(err)
		}
		want := "01ab456789S 0\nM"
		if b, err := os.ReadFile(s); err != nil || string(b) != want {
			t.Fatalf("SOURCE after an append through the descriptor: %q, %v; want %q", b, err, want)
		}
		eventually(t, "the map to show the append", func() bool { return string(mapped[:len(want)]) == want })
	})
}

// TestCoherenceAppendPastStaleEndReachesMaps: an append through the mirror
// lands at SOURCE's real end, past the end the kernel knew (SOURCE grew the
// file unseen: no watcher, long caches). A shared map of the file must
// reach the real end: the kernel takes its own end plus the bytes written
// as the size, and a map's faults never ask for attributes. From a shrunk
// two-sided sequence (a race of appenders from both sides).
func TestCoherenceAppendPastStaleEndReachesMaps(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"f": "0123456789"})
		e.start(append([]string{"--config", e.writePolicy(longCaches), "-o", "watch=off"}, mode...)...)
		m, err := os.Open(filepath.Join(e.mnt, "f"))
		must(t, err)
		defer m.Close()
		mapped, err := unix.Mmap(int(m.Fd()), 0, 16384, unix.PROT_READ, unix.MAP_SHARED)
		must(t, err)
		defer unix.Munmap(mapped)
		a, err := os.OpenFile(filepath.Join(e.mnt, "f"), os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		defer a.Close()
		// A page more, unseen by the kernel: a map's page within the size
		// the kernel knows is read whole, bytes past that size too.
		grown := strings.Repeat("S", 5000)
		s, err := os.OpenFile(filepath.Join(e.src, "f"), os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = s.WriteString(grown)
		must(t, err)
		must(t, s.Close())
		_, err = a.WriteString("M")
		must(t, err)
		want := []byte("0123456789" + grown + "M")
		if b, err := os.ReadFile(filepath.Join(e.src, "f")); err != nil || string(b) != string(want) {
			t.Fatalf("SOURCE: %q, %v; want %q", b, err, want)
		}
		eventually(t, "the map to reach the real end", func() bool { return mapShows(mapped, want) })
	})
}
