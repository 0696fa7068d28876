package fs

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openFds counts the process's open descriptors.
func openFds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestWalkBeyondPathMax: a path below SOURCE longer than PATH_MAX is
// reached a piece at a time, and every folder opened on the way is closed.
func TestWalkBeyondPathMax(t *testing.T) {
	root, err := unix.Open(t.TempDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	name := strings.Repeat("n", 255)
	var names []string
	fd, _ := unix.Dup(root)
	for len(names)*256 < 3*unix.PathMax {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd, names = next, append(names, name)
	}
	if err := unix.Mkdirat(fd, "leaf", 0o700); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)

	m := &shared{rootFd: root}
	before := openFds(t)
	for _, rel := range []string{strings.Join(names, "/") + "/leaf", "."} {
		l, errno := m.walk(rel)
		if errno != 0 {
			t.Fatalf("walk of a %d-byte path: %v", len(rel), errno)
		}
		if len(l.path) > maxRel || len(l.proc()) >= unix.PathMax {
			t.Errorf("walk left a %d-byte path (%d through /proc)", len(l.path), len(l.proc()))
		}
		var x unix.Statx_t
		if errno := statxAt(l, &x); errno != 0 || rel != "." && x.Mode&0o777 != 0o700 {
			t.Errorf("the %d-byte path leads to mode %#o (%v), not the leaf", len(rel), x.Mode, errno)
		}
		l.done()
	}
	if after := openFds(t); after != before {
		t.Errorf("%d descriptors open before the walks, %d after", before, after)
	}
	if _, errno := m.walk(strings.Join(names, "/") + "/missing/" + strings.Join(names, "/")); errno != unix.ENOENT {
		t.Errorf("walk through a missing folder: %v, want ENOENT", errno)
	}
	if after := openFds(t); after != before {
		t.Errorf("a failed walk leaves %d descriptors open, not %d", after, before)
	}
}

// TestWalkFollowsNoSymlink: a folder on the way that is a symlink (as when
// it is swapped for one on the source) does not lead out of SOURCE.
func TestWalkFollowsNoSymlink(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(outside+"/secret", []byte("s"), 0o600)
	os.Mkdir(dir+"/real", 0o755)
	os.Symlink(outside, dir+"/a")
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	m := &shared{rootFd: root}
	if l, errno := m.walk("a/secret"); errno != unix.ELOOP {
		l.done()
		t.Errorf("walk through a symlinked folder: %v, want ELOOP", errno)
	}
	l, errno := m.walk("real/x")
	if errno != 0 || l.path != "x" {
		t.Errorf("walk to real/x: %q, %v", l.path, errno)
	}
	l.done()
}
