package fs

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// TestFileStatx: an open file is described by its descriptor, whatever
// flags beyond the sync type the request carries.
func TestFileStatx(t *testing.T) {
	_, f, path := testFile(t, policy.Default, os.Getuid())
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	var out fuse.StatxOut
	flags := uint32(unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_DONT_SYNC)
	if errno := f.Statx(context.Background(), flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &out); errno != 0 {
		t.Fatalf("Statx: %v", errno)
	}
	if out.Ino != st.Ino || uint32(out.Mode)&0o7777 != st.Mode&0o7777 {
		t.Errorf("Statx: ino %d mode %o, want %d %o", out.Ino, out.Mode, st.Ino, st.Mode&0o7777)
	}
}

// TestWritevAsCaller: a write given in pieces is made as the caller too:
// by another than root, it clears the set-user-id bit of root's file.
func TestWritevAsCaller(t *testing.T) {
	requireRoot(t)
	_, f, path := testFile(t, policy.Default, 0)
	if err := unix.Chmod(path, 0o4755); err != nil {
		t.Fatal(err)
	}
	w, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := f.n.newFile(w)
	defer g.Release(context.Background())
	if n, errno := g.Writev(asUID(65534), [][]byte{[]byte("ab"), []byte("c")}, 0); errno != 0 || n != 3 {
		t.Fatalf("Writev: %d, %v", n, errno)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSetuid != 0 {
		t.Errorf("after a Writev by uid 65534: mode %v (%v), want the set-user-id bit cleared", fi.Mode(), err)
	}
}

// TestSetlkwWaitsWithoutBlocking: a wait for a held lock ends with EINTR
// once the request is interrupted, and with the lock once it is let go.
func TestSetlkwWaitsWithoutBlocking(t *testing.T) {
	for _, flags := range []uint32{0, fuse.FUSE_LK_FLOCK} {
		_, f, path := testFile(t, policy.Default, os.Getuid())
		held, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags != 0 {
			err = unix.Flock(held, unix.LOCK_EX)
		} else {
			err = unix.FcntlFlock(uintptr(held), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
		}
		if err != nil {
			t.Fatal(err)
		}
		lk := fuse.FileLock{Typ: syscall.F_RDLCK, End: 1<<63 - 1} // f is read-only
		cancel := make(chan struct{})
		ctx := &fuse.Context{Cancel: cancel}
		done := make(chan syscall.Errno, 1)
		go func() { done <- f.Setlkw(ctx, 1, &lk, flags) }()
		close(cancel)
		select {
		case errno := <-done:
			if errno != syscall.EINTR {
				t.Errorf("flags %#x: interrupted wait: %v, want EINTR", flags, errno)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("flags %#x: the interrupted wait goes on", flags)
		}
		ctx = &fuse.Context{Cancel: make(chan struct{})}
		go func() { done <- f.Setlkw(ctx, 1, &lk, flags) }()
		unix.Close(held)
		select {
		case errno := <-done:
			if errno != 0 {
				t.Errorf("flags %#x: wait for a lock let go: %v", flags, errno)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("flags %#x: the lock was let go, the wait goes on", flags)
		}
	}
}
