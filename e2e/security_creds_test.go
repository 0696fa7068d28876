package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A non-root caller's requests are carried out on SOURCE with her
// credentials: what she makes is born hers (no chown by name that a swap can
// turn on root's entries), and what she writes is charged to her (no root
// reserve).

func init() {
	probes["swap-while-creating"] = swapWhileCreating
}

// raceKinds are the entries the hostile user makes through the mirror while
// she swaps root's entries in at the name (each is given the mirror's path).
var raceKinds = map[string]func(path string) error{
	"mkdir":   func(p string) error { return unix.Mkdir(p, 0o755) },
	"symlink": func(p string) error { return unix.Symlink("target", p) },
	"fifo":    func(p string) error { return unix.Mkfifo(p, 0o644) },
	"socket":  func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o644, 0) },
	"mknod":   func(p string) error { return unix.Mknod(p, unix.S_IFREG|0o644, 0) },
	"create": func(p string) error {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	},
	"link": func(p string) error { return unix.Link(filepath.Join(filepath.Dir(p), "mine"), p) },
	"tmpfile": func(p string) error {
		fd, err := unix.Open(filepath.Dir(p), unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
	},
}

// rootEntries are what the test puts, as root's, in the hostile user's folder.
var rootEntries = []string{"rootfile", "rootdir", "rootlink"}

// swapWhileCreating (src mnt perKind): for each kind, over and over for
// perKind, makes a new name through the mirror at mnt while a goroutine
// exchanges one of root's entries with that name on the source at src;
// after each round root's entry is swapped back to its name. It moves on
// to the next kind at the first of root's entries it finds given to her.
func swapWhileCreating(args []string) error {
	src, mnt := args[0], args[1]
	perKind, err := time.ParseDuration(args[2])
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(mnt, "mine"), nil, 0o644); err != nil {
		return err
	}
	gone := map[string]bool{} // root's entries given to her already
	for kind, mk := range raceKinds {
		end := time.Now().Add(perKind)
		for i := 0; time.Now().Before(end) && len(gone) < len(rootEntries); i++ {
			name := fmt.Sprintf("%s%d", kind, i)
			victim := rootEntries[i%len(rootEntries)]
			if gone[victim] {
				continue
			}
			if raceOnce(src, victim, name, func() { mk(filepath.Join(mnt, name)) }) {
				fmt.Printf("%s: root's %s given to her in round %d\n", kind, victim, i)
				gone[victim] = true
				break
			}
		}
	}
	fmt.Printf("%d of root's entries given away\n", len(gone))
	return nil
}

// raceOnce runs mk while victim and name are exchanged on src, then puts
// root's entry back at victim and says whether it is root's no more.
func raceOnce(src, victim, name string, mk func()) bool {
	a, b := filepath.Join(src, victim), filepath.Join(src, name)
	var st unix.Stat_t
	if unix.Lstat(a, &st) != nil {
		return false
	}
	root := st.Ino
	var swapper sync.WaitGroup
	done := make(chan struct{})
	swapper.Add(1)
	go func() {
		defer swapper.Done()
		for {
			select {
			case <-done:
				return
			default:
				unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
			}
		}
	}()
	mk()
	close(done)
	swapper.Wait()
	if unix.Lstat(b, &st) == nil && st.Ino == root {
		unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	}
	return unix.Lstat(a, &st) == nil && st.Ino == root && st.Uid != 0
}

// TestCreatedEntriesCannotBeSwappedForRoots: however root's entries are
// swapped in at the names she is making, none of them becomes hers, and
// everything she made is hers.
func TestCreatedEntriesCannotBeSwappedForRoots(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			uid, gid := adversary(t)
			e := newEnv(t)
			openUp(e)
			race := filepath.Join(e.src, "race")
			os.Mkdir(race, 0o755)
			os.Chown(race, uid, gid)
			os.WriteFile(filepath.Join(race, "rootfile"), []byte("root's"), 0o644)
			os.Mkdir(filepath.Join(race, "rootdir"), 0o755)
			os.Symlink("/etc/shadow", filepath.Join(race, "rootlink"))
			roots := map[uint64]string{}
			for _, name := range rootEntries {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(race, name), &st); err != nil {
					t.Fatal(err)
				}
				roots[st.Ino] = name
			}
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			out, err := probeAsAdversary(t, "swap-while-creating", race, filepath.Join(e.mnt, "race"), "400ms")
			if err != nil {
				t.Fatalf("probe: %v\n%s", err, out)
			}
			t.Logf("probe: %s", out)
			ents, err := os.ReadDir(race)
			if err != nil {
				t.Fatal(err)
			}
			mine := 0
			for _, ent := range ents {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(race, ent.Name()), &st); err != nil {
					t.Fatal(err)
				}
				if root, ok := roots[st.Ino]; ok {
					if st.Uid != 0 || st.Gid != 0 {
						t.Errorf("root's %s (now at %s) is owned by %d:%d", root, ent.Name(), st.Uid, st.Gid)
					}
					continue
				}
				mine++
				if int(st.Uid) != uid || int(st.Gid) != gid {
					t.Errorf("%s, made by %d:%d, is owned by %d:%d", ent.Name(), uid, gid, st.Uid, st.Gid)
				}
			}
			if mine < len(raceKinds) {
				t.Errorf("only %d entries made through the mirror:\n%s", mine, out)
			}
		})
	}
}

// fill writes zeros to path as the hostile user until the file system is
// full, and returns how much it wrote; the file is removed afterwards.
func fill(t *testing.T, path, remove string) int64 {
	t.Helper()
	out, err := asAdversary(t, "dd", "if=/dev/zero", "of="+path, "bs=1M")
	if err == nil || !strings.Contains(out, "No space left") {
		t.Fatalf("dd to %s: %v, %s", path, err, out)
	}
	st, err := os.Stat(remove)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(remove); err != nil {
		t.Fatal(err)
	}
	exec.Command("sync", "-f", filepath.Dir(remove)).Run()
	return st.Size()
}

// TestWritesDoNotUseRootsReserve: through the mirror, the hostile user can
// fill no more of an ext4 file system than she can directly: the blocks it
// keeps for root stay root's.
func TestWritesDoNotUseRootsReserve(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			uid, gid := adversary(t)
			e := newEnv(t)
			openUp(e)
			fs := loopFS(t, "ext4", "", "-q", "-m", "20")
			os.Chmod(filepath.Dir(fs), 0o755)
			os.Chmod(filepath.Dir(filepath.Dir(fs)), 0o755)
			os.Chmod(fs, 0o755)
			os.Mkdir(filepath.Join(fs, "adv"), 0o755)
			os.Chown(filepath.Join(fs, "adv"), uid, gid)
			e.src = fs
			direct := fill(t, filepath.Join(fs, "adv", "f"), filepath.Join(fs, "adv", "f"))
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			mirrored := fill(t, filepath.Join(e.mnt, "adv", "f"), filepath.Join(fs, "adv", "f"))
			t.Logf("directly: %d MiB, through the mirror: %d MiB", direct>>20, mirrored>>20)
			if mirrored > direct+2<<20 {
				t.Errorf("through the mirror she wrote %d MiB, directly only %d MiB: root's reserve was hers", mirrored>>20, direct>>20)
			}
		})
	}
}

// runWithGroups runs a command as uid:gid with the supplementary groups
// given, within a deadline, and returns its combined output.
func runWithGroups(uid, gid int, groups []uint32, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// crew is a group the hostile user is in only as a supplementary group.
const crew = 4242

// TestCreatedEntriesAreTheCallers: entries she makes are hers, with the
// group a setgid folder hands down; a folder she may write only through a
// supplementary group still lets her in; and her write to a set-id file of
// root's, writable by her group, clears its set-id bits as on SOURCE.
func TestCreatedEntriesAreTheCallers(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			uid, gid := adversary(t)
			e := newEnv(t)
			openUp(e)
			shared := filepath.Join(e.src, "shared")
			os.Mkdir(shared, 0o770)
			os.Chown(shared, 0, crew)
			unix.Chmod(shared, 0o2770)
			tool := filepath.Join(e.src, "tool")
			os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755)
			os.Chown(tool, 0, crew)
			unix.Chmod(tool, 0o6775)
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			as := func(name string, args ...string) {
				t.Helper()
				if out, err := runWithGroups(uid, gid, []uint32{crew}, name, args...); err != nil {
					t.Fatalf("%s %v: %v, %s", name, args, err, out)
				}
			}
			as("touch", filepath.Join(e.mnt, "shared", "f"))
			as("mkdir", filepath.Join(e.mnt, "shared", "d"))
			as("ln", "-s", "f", filepath.Join(e.mnt, "shared", "l"))
			for _, name := range []string{"f", "d", "l"} {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(shared, name), &st); err != nil {
					t.Fatal(err)
				}
				if int(st.Uid) != uid || st.Gid != crew {
					t.Errorf("%s is %d:%d, want %d:%d (the setgid folder's group)", name, st.Uid, st.Gid, uid, crew)
				}
				if name == "d" && st.Mode&unix.S_ISGID == 0 {
					t.Errorf("a folder made in a setgid folder is not setgid: %o", st.Mode)
				}
			}
			as("sh", "-c", "echo x >> "+filepath.Join(e.mnt, "tool"))
			st, err := os.Stat(tool)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
				t.Errorf("root's set-id file written by uid %d keeps its bits: %v", uid, st.Mode())
			}
		})
	}
}
