package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	probes["statfs-link"] = statfsLink
}

// statfsLink opens the symlink args[0] itself (O_PATH|O_NOFOLLOW) and
// statfs'es it: the answer must not depend on where the link leads.
func statfsLink(args []string) error {
	fd, err := unix.Open(args[0], unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", args[0], err)
	}
	defer unix.Close(fd)
	var s unix.Statfs_t
	if err := unix.Fstatfs(fd, &s); err != nil {
		return fmt.Errorf("fstatfs %s: %w", args[0], err)
	}
	fmt.Printf("type %x\n", s.Type)
	return nil
}

// TestStatfsFollowsNoSymlink: a statfs of a symlink in the mirror describes
// the mirror, not what the link names: as root, following it would tell
// her whether a path exists in a folder she may not search.
func TestStatfsFollowsNoSymlink(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		adversary(t)
		e := newEnv(t)
		openUp(e)
		private := filepath.Join(e.dir, "private")
		os.Mkdir(private, 0o700)
		os.WriteFile(filepath.Join(private, "exists"), nil, 0o600)
		os.Symlink(filepath.Join(private, "exists"), filepath.Join(e.src, "l1"))
		os.Symlink(filepath.Join(private, "nope"), filepath.Join(e.src, "l2"))
		e.start(append([]string{"-o", "allow_other"}, mode...)...)
		out1, err1 := probeAsAdversary(t, "statfs-link", filepath.Join(e.mnt, "l1"))
		out2, err2 := probeAsAdversary(t, "statfs-link", filepath.Join(e.mnt, "l2"))
		if err1 != nil || err2 != nil || out1 != out2 {
			t.Errorf("statfs of two links differs by their targets: %q (%v) and %q (%v)", out1, err1, out2, err2)
		}
	})
}

// TestHiddenByReloadNotDescribedByHeldPath: an O_PATH descriptor held from
// before a reload reads no attributes and no link target of what the
// reload hid.
func TestHiddenByReloadNotDescribedByHeldPath(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"secretdir/file": "s"})
		os.Symlink("TARGET-SECRET", filepath.Join(e.src, "secretdir", "lnk"))
		e.start(append(mode, "--config", e.writePolicy("read_only = false\n"))...)
		dir, err := unix.Open(filepath.Join(e.mnt, "secretdir"), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dir)
		lnk, err := unix.Open(filepath.Join(e.mnt, "secretdir", "lnk"), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(lnk)
		if r := e.reload("hide = ['secretdir/']\n"); !r.OK {
			t.Fatalf("reload: %+v", r)
		}
		var x unix.Statx_t
		if err := unix.Statx(dir, "", unix.AT_EMPTY_PATH|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &x); err == nil {
			t.Errorf("statx of a held, now hidden folder succeeded (mode %o)", x.Mode)
		}
		buf := make([]byte, 64)
		if n, err := unix.Readlinkat(lnk, "", buf); err == nil {
			t.Errorf("readlink of a held, now hidden symlink: %q", buf[:n])
		}
	})
}
