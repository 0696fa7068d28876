package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/fs"
	"mirrorfs/mounts"
)

func init() {
	probes["swap-for-symlink"] = swapForSymlink
}

// swapForSymlink is the hostile user's side of the mountpoint race: in her
// folder args[0] it swaps "mnt" (a folder) and "link" (a symlink to a
// folder of root's) back and forth, atomically, until the file "stop"
// appears there or args[1] has passed. A mounted "mnt" cannot be renamed;
// the swap then fails until it is unmounted.
func swapForSymlink(args []string) error {
	d := args[0]
	limit, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	mnt, link, stop := filepath.Join(d, "mnt"), filepath.Join(d, "link"), filepath.Join(d, "stop")
	swaps := 0
	for i, end := 0, time.Now().Add(limit); time.Now().Before(end); i++ {
		if unix.Renameat2(unix.AT_FDCWD, mnt, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE) == nil {
			swaps++
		}
		if i%256 == 0 && (exists(stop) || !exists(d)) {
			break
		}
	}
	fmt.Printf("%d swaps\n", swaps)
	return nil
}

// mountsOf returns the mirrorfs mounts of source in the mount table, with
// their per-mount options.
func mountsOf(t *testing.T, source string) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m, err := mounts.Parse(strings.NewReader(sc.Text()))
		if err != nil || len(m) != 1 || m[0].FSType != fs.FSType || m[0].Source != source {
			continue
		}
		found[m[0].Mountpoint] = strings.Fields(sc.Text())[5]
	}
	return found
}

// TestMountpointSwappedForSymlink: root mounts on the mountpoint it
// checked, never where a symlink swapped in since leads; a start that fails
// leaves nothing mounted.
func TestMountpointSwappedForSymlink(t *testing.T) {
	e := newEnv(t)
	openUp(e)
	uid, gid := adversary(t)
	d, target := filepath.Join(e.dir, "d"), filepath.Join(e.dir, "rootowned")
	mnt, link := filepath.Join(d, "mnt"), filepath.Join(d, "link")
	for _, dir := range []string{d, mnt, target} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d, mnt, link} {
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range []string{target, mnt, link} {
			detachWithin(p)
		}
	})
	swapped := make(chan string, 1)
	go func() {
		out, err := probeAsAdversary(t, "swap-for-symlink", d, "15s")
		swapped <- fmt.Sprintf("%s (%v)", strings.TrimSpace(out), err)
	}()
	mountedOK, failed := 0, 0
	t.Cleanup(func() { // first: the swapping ends before anything is detached
		os.WriteFile(filepath.Join(d, "stop"), nil, 0o644)
		t.Logf("%d starts mounted, %d failed; hostile user: %s", mountedOK, failed, <-swapped)
	})
	pidf := filepath.Join(e.dir, "race.pid")
	for i, end := 0, time.Now().Add(12*time.Second); i < 30 && time.Now().Before(end); i++ {
		args := []string{e.src, mnt, "--pidfile", pidf, "--log", e.logf, "-o", "allow_other"}
		if i%2 == 1 {
			args = append(args, "-o", "nopassthrough")
		}
		r := mirrorfs(t, e.dir, args...)
		mounts := mountsOf(t, e.src)
		if opts, ok := mounts[target]; ok {
			t.Fatalf("start %d: the mirror is mounted on root's folder %s (%s), through the symlink swapped in", i, target, opts)
		}
		if r.code != 0 {
			failed++
			if len(mounts) != 0 {
				t.Fatalf("start %d failed (%s) and left a mount behind: %v", i, strings.TrimSpace(r.stderr), mounts)
			}
			continue
		}
		mountedOK++
		opts, ok := mounts[mnt]
		if !ok || len(mounts) != 1 {
			t.Fatalf("start %d succeeded, but the mirror's mounts are %v, not one at %s", i, mounts, mnt)
		}
		for _, want := range []string{"nosuid", "nodev"} {
			if !strings.Contains(","+opts+",", ","+want+",") {
				t.Errorf("start %d: the mount's options are %s, without %s", i, opts, want)
			}
		}
		pid := pidOf(t, pidf)
		syscall.Kill(pid, syscall.SIGTERM)
		if code := waitExit(t, pid); code != 0 {
			t.Fatalf("start %d: the daemon exited with %d after SIGTERM", i, code)
		}
		if left := mountsOf(t, e.src); len(left) != 0 {
			t.Fatalf("start %d: stopped, but mounts are left: %v", i, left)
		}
	}
}

// pidOf reads a pidfile.
func pidOf(t *testing.T, pidfile string) int {
	t.Helper()
	var pid int
	b, err := os.ReadFile(pidfile)
	if err == nil {
		_, err = fmt.Sscan(string(b), &pid)
	}
	if err != nil || pid <= 0 {
		t.Fatalf("pidfile %s: %v (%q)", pidfile, err, b)
	}
	return pid
}
