package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReaddirUnderChanges: while other names in a folder come and go, a
// listing of it through the mirror shows every name that stays, once, and
// no name twice (what POSIX asks of readdir). The folder is large enough
// that one listing takes several READDIR requests.
func TestReaddirUnderChanges(t *testing.T) {
	e := newEnv(t)
	const stable = 1000
	dir := filepath.Join(e.src, "d")
	os.Mkdir(dir, 0o755)
	for i := range stable {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("stable-%04d-%s", i, strings.Repeat("x", 20))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	mdir := filepath.Join(e.mnt, "d")
	defer repeat(func(i int) {
		name := filepath.Join(mdir, fmt.Sprintf("churn-%d", i%50))
		os.WriteFile(name, nil, 0o644)
		os.Rename(name, name+"-moved")
		os.Remove(filepath.Join(mdir, fmt.Sprintf("churn-%d-moved", (i+25)%50)))
	})()
	churned := 0
	for round := range 30 {
		ents, err := os.ReadDir(mdir)
		if err != nil {
			t.Fatalf("listing %d: %v", round, err)
		}
		seen := make(map[string]int, len(ents))
		nstable := 0
		for _, ent := range ents {
			if seen[ent.Name()]++; seen[ent.Name()] == 2 {
				t.Errorf("listing %d shows %s twice", round, ent.Name())
			}
			if strings.HasPrefix(ent.Name(), "stable-") && seen[ent.Name()] == 1 {
				nstable++
			}
			if strings.HasPrefix(ent.Name(), "churn-") {
				churned++
			}
		}
		if nstable != stable {
			t.Fatalf("listing %d shows %d of the %d names that stayed", round, nstable, stable)
		}
	}
	if churned == 0 {
		t.Errorf("no listing saw a name come or go: the folder did not change under them")
	}
}

// TestListingFollowsTheSource: the kernel keeps listings of folders, yet a
// name made on the source directly shows in the mirror's listing once the
// folder's attributes time out (1 s), as a name removed there goes.
func TestListingFollowsTheSource(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "old"), nil, 0o644)
	e.start()
	list := func() string {
		ents, _ := os.ReadDir(e.mnt)
		var names []string
		for _, ent := range ents {
			names = append(names, ent.Name())
		}
		return strings.Join(names, " ")
	}
	if got := list(); got != "old" {
		t.Fatalf("listing: %q", got)
	}
	os.WriteFile(filepath.Join(e.src, "new"), nil, 0o644)
	os.Remove(filepath.Join(e.src, "old"))
	eventually(t, "the listing shows the source's change", func() bool { return list() == "new" })

	// A change that leaves the folder's mtime as it was (as rsync -a or
	// tar restore it) shows all the same, once the kept listing expires.
	var st syscall.Stat_t
	syscall.Stat(e.src, &st)
	os.WriteFile(filepath.Join(e.src, "newer"), nil, 0o644)
	os.Chtimes(e.src, time.Unix(st.Atim.Sec, st.Atim.Nsec), time.Unix(st.Mtim.Sec, st.Mtim.Nsec))
	eventually(t, "the listing shows a change that kept the mtime", func() bool { return list() == "new newer" })
}

// TestInodeNumbers: the mirror shows the source's inode numbers, the
// mountpoint included (tools such as find and du rely on them).
func TestInodeNumbers(t *testing.T) {
	e := newEnv(t)
	os.Mkdir(filepath.Join(e.src, "d"), 0o755)
	e.start()
	for _, name := range []string{"", "d"} {
		var src, mnt syscall.Stat_t
		syscall.Stat(filepath.Join(e.src, name), &src)
		if err := syscall.Stat(filepath.Join(e.mnt, name), &mnt); err != nil || mnt.Ino != src.Ino {
			t.Errorf("%q: inode %d through the mirror, %d on the source (%v)", name, mnt.Ino, src.Ino, err)
		}
	}
}

// TestFolderDescriptorsReleased: the daemon keeps a descriptor of each
// folder the kernel knows, and lets go of it when the kernel forgets the
// folder.
func TestFolderDescriptorsReleased(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		for i := range 200 {
			os.MkdirAll(filepath.Join(e.src, "a", strconv.Itoa(i), "b"), 0o755)
		}
		e.start(mode...)
		pid := e.pid()
		fds := func() int {
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			return len(ents)
		}
		before := fds()
		for i := range 200 {
			if _, err := os.Stat(filepath.Join(e.mnt, "a", strconv.Itoa(i), "b", "missing")); !os.IsNotExist(err) {
				t.Fatalf("stat: %v", err)
			}
		}
		if held := fds() - before; held < 200 {
			t.Fatalf("the daemon holds %d more descriptors after 200 folders were looked into, want 200 or more", held)
		}
		// Removing the folders through the mirror makes the kernel forget
		// them (rmdir drops their dentries), without touching the caches of
		// the rest of the machine.
		if err := os.RemoveAll(filepath.Join(e.mnt, "a")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the daemon lets go of the folders' descriptors", func() bool {
			return fds()-before < 20
		})
	})
}
