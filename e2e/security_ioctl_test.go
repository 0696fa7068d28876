package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hostile user sends ioctls through the mirror, which the daemon would
// run on SOURCE as root: the mirror runs only a short list of them, with
// the caller's rights, and answers ENOTTY to the rest.

// Commands and flags of linux/fs.h, ext4 and xfs (amd64 and arm64 numbers).
const (
	fsIocGetfslabel  = 0x81009431 // _IOR(0x94, 49, char[256])
	fsIocSetfslabel  = 0x41009432 // _IOW(0x94, 50, char[256]): CAP_SYS_ADMIN
	ext4IocShutdown  = 0x8004587d // _IOR('X', 125, __u32): also XFS_IOC_GOINGDOWN
	ext4IocMoveExt   = 0xc028660f // _IOWR('f', 15, struct move_extent): holds a descriptor
	xfsIocFsbulkstat = 0xc0205865 // _IOWR('X', 101, struct xfs_fsop_bulkreq): holds pointers

	fsImmutableFl   = 0x10
	fsNoatimeFl     = 0x80
	fsNodumpFl      = 0x40
	fsJournalDataFl = 0x4000
)

const srcLabel = "mirrorsrc"

func init() {
	probes["ioctl"] = ioctlProbe
}

// ioctlProbe PATH OP [N] opens PATH (for writing if it may) and runs one
// ioctl on it, with N where the op takes a number; it prints
// "errno=E value=V".
func ioctlProbe(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: ioctl PATH OP [N]")
	}
	var n uint64
	if len(args) > 2 {
		n, _ = strconv.ParseUint(args[2], 0, 64)
	}
	fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Open(args[0], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	op, ok := ioctlOps[args[1]]
	if !ok {
		return fmt.Errorf("no op %q", args[1])
	}
	v, err := op(fd, n)
	errno, _ := err.(syscall.Errno)
	if err != nil && errno == 0 {
		return err
	}
	fmt.Printf("errno=%d value=%d\n", errno, v)
	return nil
}

func rawIoctl(fd int, cmd uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), cmd, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// ioctlOps are what the probe can do with an open file of the mirror.
var ioctlOps = map[string]func(fd int, n uint64) (uint64, error){
	"setfslabel": func(fd int, _ uint64) (uint64, error) {
		var label [256]byte
		copy(label[:], "hostile")
		return 0, rawIoctl(fd, fsIocSetfslabel, unsafe.Pointer(&label))
	},
	"shutdown": func(fd int, _ uint64) (uint64, error) {
		var how uint32 // EXT4_GOING_FLAGS_DEFAULT
		return 0, rawIoctl(fd, ext4IocShutdown, unsafe.Pointer(&how))
	},
	"bulkstat": func(fd int, _ uint64) (uint64, error) {
		// Addresses the daemon does not map: enough to see whether the
		// kernel was given them to follow.
		req := struct {
			lastip  uint64
			icount  int32
			_       int32
			ubuffer uint64
			ocount  uint64
		}{lastip: 0x1000, icount: 1, ubuffer: 0x2000, ocount: 0x3000}
		return 0, rawIoctl(fd, xfsIocFsbulkstat, unsafe.Pointer(&req))
	},
	"moveext": func(fd int, donor uint64) (uint64, error) {
		me := struct {
			reserved, donorFd                    uint32
			origStart, donorStart, length, moved uint64
		}{donorFd: uint32(donor), length: 1}
		err := rawIoctl(fd, ext4IocMoveExt, unsafe.Pointer(&me))
		return me.moved, err
	},
	"getflags": func(fd int, _ uint64) (uint64, error) {
		v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		return uint64(v), err
	},
	"addflags": func(fd int, n uint64) (uint64, error) {
		v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		if err != nil {
			return 0, err
		}
		return 0, unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(v|uint32(n)))
	},
	"fionread": func(fd int, n uint64) (uint64, error) {
		if _, err := unix.Read(fd, make([]byte, n)); err != nil {
			return 0, err
		}
		v, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		return uint64(v), err
	},
}

// ioctlAsAdversary runs one ioctl op on path as the hostile user.
func ioctlAsAdversary(t *testing.T, path, op string, n uint64) (uint64, syscall.Errno) {
	t.Helper()
	out, err := probeAsAdversary(t, "ioctl", path, op, strconv.FormatUint(n, 10))
	if err != nil {
		t.Fatalf("ioctl probe %s on %s: %v: %s", op, path, err, out)
	}
	var errno syscall.Errno
	var v uint64
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "errno=%d value=%d", &errno, &v); err != nil {
		t.Fatalf("ioctl probe %s: %q: %v", op, out, err)
	}
	return v, errno
}

// ioctlMirror is a mirror served with allow_other, of a loop file system of
// its own holding the hostile user's file (hers) and two of root's: a
// 0600 one (roots) and a 0644 one (public), 4 KiB each.
type ioctlMirror struct {
	e      *env
	fstype string
	ro     bool
}

var ioctlModes = []struct {
	name string
	opts []string
}{
	{"passthrough", nil},
	{"nopassthrough", []string{"-o", "nopassthrough"}},
	{"ro", []string{"-o", "ro"}},
}

// forEachIoctlMirror runs test on mirrors of ext4 and xfs in each mode.
func forEachIoctlMirror(t *testing.T, test func(t *testing.T, m *ioctlMirror)) {
	mkfs := map[string][]string{"ext4": {"-q", "-L", srcLabel}, "xfs": {"-q", "-f", "-L", srcLabel}}
	for _, fstype := range []string{"ext4", "xfs"} {
		for _, mode := range ioctlModes {
			t.Run(fstype+"/"+mode.name, func(t *testing.T) {
				src := loopFS(t, fstype, "", mkfs[fstype]...)
				e := newEnv(t) // after loopFS: its cleanup, which unmounts the mirror, runs first
				e.src = src
				openUp(e)
				m := &ioctlMirror{e: e, fstype: fstype, ro: mode.name == "ro"}
				m.populate(adversary(t))
				e.start(append([]string{"-o", "allow_other"}, mode.opts...)...)
				test(t, m)
			})
		}
	}
}

func (m *ioctlMirror) src(name string) string { return filepath.Join(m.e.src, name) }
func (m *ioctlMirror) mnt(name string) string { return filepath.Join(m.e.mnt, name) }

func (m *ioctlMirror) populate(uid, gid int) {
	t := m.e.t
	if err := os.Chmod(m.e.src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name     string
		fill     byte
		mode     os.FileMode
		uid, gid int
	}{{"hers", 'h', 0o644, uid, gid}, {"roots", 'r', 0o600, 0, 0}, {"public", 'p', 0o644, 0, 0}} {
		if err := writeSynced(m.src(f.name), bytes.Repeat([]byte{f.fill}, 4096), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(m.src(f.name), f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSynced writes a file on SOURCE and waits for its blocks, so that
// it has extents to move.
func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if f != nil {
		f.Close()
	}
	return err
}

// flagsOnSource are path's flags, as lsattr shows them, read as root on
// SOURCE directly.
func flagsOnSource(t *testing.T, path string) uint32 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// labelOnSource is SOURCE's file system label, read as root directly.
func labelOnSource(t *testing.T, src string) string {
	t.Helper()
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var label [256]byte
	if err := rawIoctl(fd, fsIocGetfslabel, unsafe.Pointer(&label)); err != nil {
		t.Fatalf("FS_IOC_GETFSLABEL on %s: %v", src, err)
	}
	return string(bytes.TrimRight(label[:], "\x00"))
}

// daemonFds are the daemon's descriptors of path.
func daemonFds(t *testing.T, pid int, path string) []int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, ent := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, ent.Name())); target == path {
			n, _ := strconv.Atoi(ent.Name())
			fds = append(fds, n)
		}
	}
	return fds
}

// TestIoctlsNeedingRootRefused: commands that need CAP_SYS_ADMIN, whose
// argument holds pointers or a descriptor number, give ENOTTY and change
// nothing on SOURCE, on every mount.
func TestIoctlsNeedingRootRefused(t *testing.T) {
	forEachIoctlMirror(t, func(t *testing.T, m *ioctlMirror) {
		hers := m.mnt("hers")
		if _, errno := ioctlAsAdversary(t, hers, "setfslabel", 0); errno != syscall.ENOTTY {
			t.Errorf("FS_IOC_SETFSLABEL: %v, want ENOTTY", errno)
		}
		if got := labelOnSource(t, m.e.src); got != srcLabel {
			t.Errorf("SOURCE's label is now %q, was %q", got, srcLabel)
		}
		if _, errno := ioctlAsAdversary(t, hers, "bulkstat", 0); errno != syscall.ENOTTY {
			t.Errorf("XFS_IOC_FSBULKSTAT: %v, want ENOTTY", errno)
		}
		m.moveExtentsRefused(t)
		// Last: on failure, SOURCE is shut down.
		if _, errno := ioctlAsAdversary(t, hers, "shutdown", 0); errno != syscall.ENOTTY {
			t.Errorf("EXT4_IOC_SHUTDOWN: %v, want ENOTTY", errno)
		}
		if err := writeSynced(m.src("after-shutdown"), []byte("still writable"), 0o644); err != nil {
			t.Errorf("writing on SOURCE after the shutdown attempt: %v", err)
		}
	})
}

// moveExtentsRefused: with root's 0600 file open through the mirror, the
// hostile user names the daemon's descriptor of it as the donor of
// EXT4_IOC_MOVE_EXT on her own file.
func (m *ioctlMirror) moveExtentsRefused(t *testing.T) {
	flag := os.O_RDWR
	if m.ro {
		flag = os.O_RDONLY
	}
	held, err := os.OpenFile(m.mnt("roots"), flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	donors := daemonFds(t, m.e.pid(), m.src("roots"))
	if len(donors) == 0 {
		t.Fatalf("the daemon holds no descriptor of %s", m.src("roots"))
	}
	for _, fd := range donors {
		if _, errno := ioctlAsAdversary(t, m.mnt("hers"), "moveext", uint64(fd)); errno != syscall.ENOTTY {
			t.Errorf("EXT4_IOC_MOVE_EXT with the daemon's descriptor %d: %v, want ENOTTY", fd, errno)
		}
	}
	if got, err := readDirect(m.src("roots")); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{'r'}, 4096)) {
		t.Errorf("root's file on SOURCE changed (%v): begins %q", err, got[:min(len(got), 16)])
	}
}

// readDirect reads the first 4 KiB of path from its blocks, not from the
// page cache: moved extents leave the cached pages as they were.
func readDirect(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS) // aligned
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	n, err := unix.Pread(fd, buf, 0)
	return bytes.Clone(buf[:max(n, 0)]), err
}

// TestIoctlsAllowed: the listed commands work, with the rights the caller
// has on SOURCE.
func TestIoctlsAllowed(t *testing.T) {
	forEachIoctlMirror(t, func(t *testing.T, m *ioctlMirror) {
		hers := m.mnt("hers")
		if err := ioctlSet(m.src("hers"), fsNodumpFl); err != nil {
			t.Fatal(err)
		}
		if got, errno := ioctlAsAdversary(t, hers, "getflags", 0); errno != 0 || uint32(got) != flagsOnSource(t, m.src("hers")) {
			t.Errorf("FS_IOC_GETFLAGS: %#x (%v), SOURCE has %#x", got, errno, flagsOnSource(t, m.src("hers")))
		}
		if got, errno := ioctlAsAdversary(t, hers, "fionread", 100); errno != 0 || got != 4096-100 {
			t.Errorf("FIONREAD after reading 100 bytes of 4096: %d (%v)", got, errno)
		}
		if m.ro {
			if _, errno := ioctlAsAdversary(t, hers, "addflags", fsNoatimeFl); errno != syscall.EROFS {
				t.Errorf("FS_IOC_SETFLAGS on a read-only mount: %v, want EROFS", errno)
			}
			return
		}
		m.setFlagsChecked(t)
	})
}

func ioctlSet(path string, flags uint32) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(v|flags))
}

// setFlagsChecked: the owner may set noatime, not the flags that need a
// capability; nobody but the owner may set any.
func (m *ioctlMirror) setFlagsChecked(t *testing.T) {
	hers := m.mnt("hers")
	if _, errno := ioctlAsAdversary(t, hers, "addflags", fsNoatimeFl); errno != 0 {
		t.Errorf("FS_IOC_SETFLAGS noatime by the owner: %v", errno)
	}
	if got := flagsOnSource(t, m.src("hers")); got&fsNoatimeFl == 0 {
		t.Errorf("noatime is not set on SOURCE: flags %#x", got)
	}
	for _, c := range []struct {
		what, path string
		flag       uint32
	}{
		{"noatime on root's file", m.mnt("public"), fsNoatimeFl},
		{"immutable on her own file", hers, fsImmutableFl},
		{"data journaling (CAP_SYS_RESOURCE) on her own file", hers, fsJournalDataFl},
	} {
		if _, errno := ioctlAsAdversary(t, c.path, "addflags", uint64(c.flag)); errno != syscall.EPERM {
			t.Errorf("FS_IOC_SETFLAGS %s: %v, want EPERM", c.what, errno)
		}
		if got := flagsOnSource(t, filepath.Join(m.e.src, filepath.Base(c.path))); got&c.flag != 0 {
			t.Errorf("FS_IOC_SETFLAGS %s: set on SOURCE (%#x)", c.what, got)
		}
	}
}
