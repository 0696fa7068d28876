package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The hidden names of the policy file stay hidden: by a name the source
// folds to them, and after a reload, for everything opened or held before.

// bothModes runs test once in each of the mirror's modes, with its options.
func bothModes(t *testing.T, test func(t *testing.T, mode ...string)) {
	for name, opts := range modes {
		t.Run(name, func(t *testing.T) { test(t, opts...) })
	}
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHideCaseVariantsOnCaseInsensitiveSource: on exFAT, "ID.KEY" is
// "id.key"; a hidden name is hidden by every name that reaches it.
func TestHideCaseVariantsOnCaseInsensitiveSource(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		e.src = loopFS(t, "exfat", "umask=0")
		secrets := map[string]string{"id.key": "KEY", ".env": "ENV", "etc/secret": "ETC", "cache/inner": "CACHE"}
		writeFiles(t, e.src, secrets)
		writeFiles(t, e.src, map[string]string{"visible.txt": "v"})
		e.start(append(mode, "--config", e.writePolicy("hide = ['*.key', '.env', 'etc/secret', 'cache/']\n"))...)
		m := func(name string) string { return filepath.Join(e.mnt, name) }
		if b, err := os.ReadFile(m("VISIBLE.TXT")); err != nil || string(b) != "v" {
			t.Fatalf("a visible file by another case: %q, %v (is the source case-insensitive?)", b, err)
		}
		for _, name := range []string{"id.KEY", "ID.KEY", ".ENV", "ETC/secret", "etc/SECRET", "Cache/inner", "CACHE/inner"} {
			if b, err := os.ReadFile(m(name)); err == nil {
				t.Errorf("read %s: %q", name, b)
			}
			if _, err := os.Lstat(m(name)); err == nil {
				t.Errorf("stat %s succeeded", name)
			}
		}
		wantErrno(t, "write over ID.KEY", os.WriteFile(m("ID.KEY"), []byte("new\n"), 0o644), syscall.EPERM)
		wantErrno(t, "rm .ENV", os.Remove(m(".ENV")), syscall.ENOENT)
		wantErrno(t, "rename .ENV away", os.Rename(m(".ENV"), m("got")), syscall.ENOENT)
		wantErrno(t, "rename onto ID.KEY", os.Rename(m("visible.txt"), m("ID.KEY")), syscall.EPERM)
		wantErrno(t, "mkdir CACHE", os.Mkdir(m("CACHE"), 0o755), syscall.EPERM)
		for name, data := range secrets {
			if b, err := os.ReadFile(filepath.Join(e.src, name)); err != nil || string(b) != data {
				t.Errorf("SOURCE %s now holds %q (%v), want %q", name, b, err, data)
			}
		}
	})
}

// TestHideHeldObjectsAfterReload: what was opened or reached before a
// reload gives no new access to what the new policy hides; the open file
// itself keeps working, as after a chmod.
func TestHideHeldObjectsAfterReload(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"a.key": "KEY", "box/f": "BOX"})
		const long = "entry_timeout = '1h'\nattr_timeout = '1h'\n"
		e.start(append(mode, "--config", e.writePolicy(long))...)
		m := func(name string) string { return filepath.Join(e.mnt, name) }
		held, err := os.Open(m("a.key"))
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		box, err := os.Open(m("box")) // as a cwd inside box
		if err != nil {
			t.Fatal(err)
		}
		defer box.Close()
		handle, mountID, handleErr := unix.NameToHandleAt(unix.AT_FDCWD, m("a.key"), 0)

		if r := e.reload(long + "hide = ['*.key', 'box/']\n"); !r.OK {
			t.Fatalf("reload: %+v", r)
		}
		proc := "/proc/self/fd/" + strconv.Itoa(int(held.Fd()))
		if f, err := os.Open(proc); err == nil {
			f.Close()
			t.Error("reopened a now hidden file through /proc/self/fd")
		}
		if fd, err := unix.Openat(int(box.Fd()), "f", unix.O_RDONLY, 0); err == nil {
			unix.Close(fd)
			t.Error("opened a file below a now hidden folder, from a descriptor of it")
		}
		var st unix.Stat_t
		if unix.Fstatat(int(box.Fd()), "f", &st, 0) == nil {
			t.Error("stat of a file below a now hidden folder")
		}
		err = unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, m("exposed.txt"), unix.AT_SYMLINK_FOLLOW)
		if err == nil || exists(filepath.Join(e.src, "exposed.txt")) {
			t.Errorf("linkat of a held, now hidden file to a new name: %v", err)
		}
		if handleErr != nil {
			t.Logf("name_to_handle_at on the mirror: %v (no open_by_handle_at to check)", handleErr)
		} else {
			mfd, err := unix.Open(e.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fd, err := unix.OpenByHandleAt(mfd, handle, unix.O_RDONLY)
			unix.Close(mfd)
			if err == nil {
				unix.Close(fd)
				t.Error("open_by_handle_at of a now hidden file")
			}
			t.Logf("open_by_handle_at (mount %d): %v", mountID, err)
		}
		buf := make([]byte, 8)
		if n, err := held.ReadAt(buf, 0); string(buf[:n]) != "KEY" {
			t.Errorf("the file open before the reload: %q, %v", buf[:n], err)
		}
		if _, err := held.Stat(); err != nil {
			t.Errorf("fstat of the file open before the reload: %v", err)
		}
	})
}

// TestHideReloadIsAtomic: once a reload is recorded, every name it hides is
// unreachable, though lookups of them were in flight across it; and a
// rename that each of two policies refuses never succeeds while they
// alternate.
func TestHideReloadIsAtomic(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		const n = 24
		files := map[string]string{"x": "x", "y": "y"}
		for i := range n {
			files[fmt.Sprintf("n%d", i)] = "s"
		}
		writeFiles(t, e.src, files)
		const long = "entry_timeout = '1h'\nattr_timeout = '1h'\n"
		e.start(append(mode, "--config", e.writePolicy(long))...)
		m := func(name string) string { return filepath.Join(e.mnt, name) }
		var stops []func()
		for w := range 4 {
			stops = append(stops, repeat(func(i int) {
				os.Lstat(m(fmt.Sprintf("n%d", (i*7+w)%n)))
			}))
		}
		for round := range 8 {
			if r := e.reload(long + "hide = ['n*']\n"); !r.OK {
				t.Fatalf("reload: %+v", r)
			}
			var seen []string
			for i := range n {
				if _, err := os.Lstat(m(fmt.Sprintf("n%d", i))); !errors.Is(err, syscall.ENOENT) {
					seen = append(seen, fmt.Sprintf("n%d", i))
				}
			}
			if len(seen) > 0 {
				t.Errorf("round %d: %d hidden names reachable after the reload was recorded: %v", round, len(seen), seen)
			}
			e.reload(long)
		}
		for _, stop := range stops {
			stop()
		}

		// Policy A hides x, B hides y: each refuses rename(x, y).
		policies := []string{"hide = ['x']\n", "hide = ['y']\n"}
		e.reload(policies[1])
		var renamed atomic.Int64
		stopRename := repeat(func(int) {
			if os.Rename(m("x"), m("y")) == nil {
				renamed.Add(1)
				os.WriteFile(filepath.Join(e.src, "x"), []byte("x"), 0o644)
			}
		})
		for i := range 150 {
			e.writePolicy(policies[i%2])
			syscall.Kill(e.pid(), syscall.SIGHUP)
			if i%10 == 9 {
				e.reload(policies[i%2]) // now and then, wait for one to be done
			}
		}
		stopRename()
		if renamed.Load() > 0 {
			t.Errorf("rename(x, y) succeeded %d times, where each policy refuses it", renamed.Load())
		}
	})
}
