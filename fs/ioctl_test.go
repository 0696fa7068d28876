package fs

import (
	"context"
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"mirrorfs/policy"
)

// Commands that must never run, with their numbers on amd64 and arm64.
const (
	fsIocSetfslabel  = 0x41009432 // _IOW(0x94, 50, char[256])
	ext4IocShutdown  = 0x8004587d // _IOR('X', 125, __u32)
	ext4IocMoveExt   = 0xc028660f // _IOWR('f', 15, struct move_extent): a descriptor
	xfsIocFsbulkstat = 0xc0205865 // _IOWR('X', 101, struct xfs_fsop_bulkreq): pointers
	fsIocFssetxattr  = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsIoc32Getflags  = 0x80046601 // _IOR('f', 1, int): ENOTTY natively on ext4 too
	fsJournalDataFl  = 0x00004000
	fsCasefoldFl     = 0x40000000
)

// TestIoctlTable: the list is what the README's Security section says, and
// only SETFLAGS changes anything.
func TestIoctlTable(t *testing.T) {
	want := map[uint32]bool{unix.TIOCINQ: false, unix.FS_IOC_GETFLAGS: false, fsIocFsgetxattr: false, unix.FS_IOC_SETFLAGS: true}
	got := slices.Sorted(maps.Keys(ioctls))
	if !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Fatalf("allowed ioctls %#x, want %#x", got, slices.Sorted(maps.Keys(want)))
	}
	for cmd, changes := range want {
		if ioctls[cmd].changes != changes {
			t.Errorf("ioctl %#x: changes=%v, want %v", cmd, ioctls[cmd].changes, changes)
		}
	}
}

// testFile is a node of an empty file, mirrored under p, and an open
// handle of it; the file is owned by uid.
func testFile(t *testing.T, p *policy.Policy, uid int) (*node, *file, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{m: &shared{}}
	n.m.policy.Store(p)
	f := n.newFile(fd)
	t.Cleanup(func() { f.Release(context.Background()) })
	return n, f, path
}

func asUID(uid uint32) context.Context {
	return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: uid}})
}

// TestIoctlRefusesUnlisted: commands off the list give ENOTTY before any
// of their argument is looked at, and so does a request without a handle.
func TestIoctlRefusesUnlisted(t *testing.T) {
	requireRoot(t)
	n, f, _ := testFile(t, policy.Default, 0)
	in, out := make([]byte, 256), make([]byte, 256)
	for _, cmd := range []uint32{fsIocSetfslabel, ext4IocShutdown, ext4IocMoveExt, xfsIocFsbulkstat, fsIocFssetxattr, fsIoc32Getflags, unix.FS_IOC_ENABLE_VERITY} {
		if _, errno := n.Ioctl(asUID(0), f, cmd, 0x1000, in, out); errno != syscall.ENOTTY {
			t.Errorf("ioctl %#x: %v, want ENOTTY", cmd, errno)
		}
	}
	if _, errno := n.Ioctl(asUID(0), nil, unix.FS_IOC_GETFLAGS, 0, nil, make([]byte, 4)); errno != syscall.ENOTTY {
		t.Errorf("GETFLAGS without a handle: %v, want ENOTTY", errno)
	}
}

func flagsOf(t *testing.T, path string) uint32 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("the temporary folder has no file flags: %v", err)
	}
	return v
}

func int32Bytes(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// TestIoctlGetFlags: the int the kernel gives, in the caller's buffer of
// the size the kernel says, the rest of it zeroed.
func TestIoctlGetFlags(t *testing.T) {
	requireRoot(t)
	n, f, path := testFile(t, policy.New(true, nil), 0)
	out := slices.Repeat([]byte{0xff}, 8)
	if _, errno := n.Ioctl(asUID(1234), f, unix.FS_IOC_GETFLAGS, 0, nil, out); errno != 0 {
		t.Fatalf("GETFLAGS under read_only: %v", errno)
	}
	if got, want := out, append(int32Bytes(flagsOf(t, path)), 0, 0, 0, 0); !slices.Equal(got, want) {
		t.Errorf("GETFLAGS wrote %x, want %x", got, want)
	}
	if _, errno := n.Ioctl(asUID(1234), f, unix.FS_IOC_GETFLAGS, 0, nil, make([]byte, 2)); errno != syscall.EINVAL {
		t.Errorf("GETFLAGS into 2 bytes: %v, want EINVAL", errno)
	}
	x := make([]byte, 28)
	if _, errno := n.Ioctl(asUID(1234), f, fsIocFsgetxattr, 0, nil, x); errno != 0 {
		t.Errorf("FSGETXATTR: %v", errno)
	}
}

// TestIoctlSetFlags: the owner may change the harmless flags, root the
// immutable and append-only ones too, nobody the rest; read_only and a
// read-only mount refuse it.
func TestIoctlSetFlags(t *testing.T) {
	requireRoot(t)
	const owner = 1234
	n, f, path := testFile(t, policy.Default, owner)
	set := func(uid uint32, v uint32) syscall.Errno {
		_, errno := n.Ioctl(asUID(uid), f, unix.FS_IOC_SETFLAGS, 0, int32Bytes(v), nil)
		return errno
	}
	base := flagsOf(t, path)
	t.Cleanup(func() { set(0, base) }) // an append-only file could not be removed
	for _, c := range []struct {
		what  string
		uid   uint32
		flags uint32
		want  syscall.Errno
	}{
		{"noatime by the owner", owner, base | fsNoatimeFl, 0},
		{"nodump by another user", owner + 1, base | fsNodumpFl, syscall.EPERM},
		{"immutable by the owner", owner, base | fsImmutableFl, syscall.EPERM},
		{"journal data by the owner", owner, base | fsJournalDataFl, syscall.EPERM},
		{"journal data by root", 0, base | fsJournalDataFl, syscall.EPERM},
		{"casefold by root", 0, base | fsCasefoldFl, syscall.EPERM},
		{"append-only by root", 0, base | fsAppendFl, 0},
		{"back as it was, by root", 0, base, 0},
	} {
		if errno := set(c.uid, c.flags); errno != c.want {
			t.Errorf("%s: %v, want %v", c.what, errno, c.want)
		}
		if got := flagsOf(t, path); c.want == 0 && got != c.flags || c.want != 0 && got == c.flags {
			t.Errorf("%s: flags %#x afterwards", c.what, got)
		}
	}
	if _, errno := n.Ioctl(asUID(owner), f, unix.FS_IOC_SETFLAGS, 0, []byte{1}, nil); errno != syscall.EINVAL {
		t.Errorf("SETFLAGS from 1 byte: %v, want EINVAL", errno)
	}
	n.m.policy.Store(policy.New(true, nil))
	if errno := set(owner, base|fsNoatimeFl); errno != syscall.EROFS {
		t.Errorf("SETFLAGS under read_only: %v, want EROFS", errno)
	}
	n.m.policy.Store(policy.Default)
	n.m.readOnly = true
	if errno := set(owner, base|fsNoatimeFl); errno != syscall.EROFS {
		t.Errorf("SETFLAGS on a read-only mount: %v, want EROFS", errno)
	}
}
