package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Sharing SOURCE: programs work on SOURCE directly while others work on the
// same files through the mirror. Nothing either side writes is lost, and
// nothing the mirror serves is torn between two files.

// appendLines appends n lines "tag i" to path through one descriptor opened
// O_APPEND, as a logger does.
func appendLines(path, tag string, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := 0; i < n; i++ {
		if _, err := fmt.Fprintf(f, "%s %d\n", tag, i); err != nil {
			return err
		}
	}
	return nil
}

// TestCoherenceAppendsFromBothSidesKept: one appender on each side of a
// shared log; every line of both is there afterwards, whole.
func TestCoherenceAppendsFromBothSidesKept(t *testing.T) {
	const n = 2000
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"log": "start\n"})
		e.start(mode...)
		if _, err := os.ReadFile(filepath.Join(e.mnt, "log")); err != nil { // the kernel knows its size
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, w := range []struct{ path, tag string }{{filepath.Join(e.mnt, "log"), "M"}, {filepath.Join(e.src, "log"), "S"}} {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = appendLines(w.path, w.tag, n) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(e.src, "log"))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSuffix(string(got), "\n"), "\n") {
			seen[l] = true
		}
		var lost []string
		for _, tag := range []string{"M", "S"} {
			for i := 0; i < n; i++ {
				if l := fmt.Sprintf("%s %d", tag, i); !seen[l] {
					lost = append(lost, l)
				}
			}
		}
		if len(lost) > 0 || len(seen) != 2*n+1 {
			t.Fatalf("%d of %d lines lost (first: %q); %d distinct lines, want %d", len(lost), 2*n, lost[:min(5, len(lost))], len(seen), 2*n+1)
		}
		through, err := os.ReadFile(filepath.Join(e.mnt, "log"))
		if err != nil || !bytes.Equal(through, got) {
			t.Fatalf("through the mirror: %d bytes (%v), SOURCE has %d", len(through), err, len(got))
		}
	})
}

// TestCoherenceAppendAfterSourceGrew is the reproduction of the report:
// echo one > S/h; cat M/h; echo two >> S/h; echo three >> M/h.
func TestCoherenceAppendAfterSourceGrew(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		e.start(mode...)
		s, m := filepath.Join(e.src, "h"), filepath.Join(e.mnt, "h")
		if err := os.WriteFile(s, []byte("one\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		appender, err := os.OpenFile(m, os.O_WRONLY|os.O_APPEND, 0) // opened before SOURCE grows
		if err != nil {
			t.Fatal(err)
		}
		defer appender.Close()
		if b, err := os.ReadFile(m); err != nil || string(b) != "one\n" {
			t.Fatalf("cat M/h: %q, %v", b, err)
		}
		reader, err := os.Open(m) // keeps the kernel's cached pages in use
		if err != nil {
			t.Fatal(err)
		}
		defer reader.Close()
		if got := preadAll(reader); got != "one\n" {
			t.Fatalf("a reader of M/h: %q", got)
		}
		mapped, err := unix.Mmap(int(reader.Fd()), 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mapped)
		if string(mapped[:4]) != "one\n" {
			t.Fatalf("mapped: %q", mapped[:4])
		}
		if err := appendLines(s, "two", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := appender.WriteString("three 0\n"); err != nil {
			t.Fatal(err)
		}
		want := "one\ntwo 0\nthree 0\n"
		// A shared map may lag behind SOURCE (nothing tells it of SOURCE's
		// append), but never shows bytes where they are not.
		for i := range want {
			if c := mapped[i]; c != want[i] && c != 0 {
				t.Fatalf("mapped: %q; SOURCE has %q", bytes.TrimRight(mapped, "\x00"), want)
			}
		}
		if b, err := os.ReadFile(s); err != nil || string(b) != want {
			t.Fatalf("cat S/h: %q, %v; want %q", b, err, want)
		}
		if b, err := os.ReadFile(m); err != nil || string(b) != want {
			t.Fatalf("cat M/h: %q, %v; want %q", b, err, want)
		}
		if got := preadAll(reader); got != want {
			t.Fatalf("the reader opened before reads %q; want %q", got, want)
		}
	})
}

// replaceByRename puts data at path as an editor or a package manager does:
// write a new file, rename it over the old one.
func replaceByRename(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// preadAll reads f from offset 0, as a held descriptor rereads its file.
func preadAll(f *os.File) string {
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n == 0 {
		return "error: " + err.Error()
	}
	return string(buf[:n])
}

// TestCoherenceReplacedFileIsANewNode: a file replaced on SOURCE by
// rename while held open through the mirror. The held descriptor reads its
// own file; a new open, and a stat by name, get the replacement whole —
// never the new bytes cut to the old size.
func TestCoherenceReplacedFileIsANewNode(t *testing.T) {
	for _, c := range []struct{ name, old, new string }{
		{"longer", "old content", "NEW-CONTENT, longer"},
		{"same-size", "old content", "NEW-CONTENT"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bothModes(t, func(t *testing.T, mode ...string) {
				e := newEnv(t)
				writeFiles(t, e.src, map[string]string{"f": c.old})
				e.start(mode...)
				m := filepath.Join(e.mnt, "f")
				held, err := os.Open(m)
				if err != nil {
					t.Fatal(err)
				}
				defer held.Close()
				if got := preadAll(held); got != c.old {
					t.Fatalf("held, before: %q", got)
				}
				replaceByRename(t, filepath.Join(e.src, "f"), c.new)
				if b, err := os.ReadFile(m); err != nil || string(b) != c.new {
					t.Errorf("a new open reads %q (%v), want %q", b, err, c.new)
				}
				var st unix.Stat_t
				if err := unix.Stat(m, &st); err != nil || st.Size != int64(len(c.new)) {
					t.Errorf("stat: size %d (%v), want %d", st.Size, err, len(c.new))
				}
				if got := preadAll(held); got != c.old {
					t.Errorf("the held descriptor reads %q, want its own %q", got, c.old)
				}
				if err := held.Close(); err != nil {
					t.Error(err)
				}
				if b, err := os.ReadFile(m); err != nil || string(b) != c.new {
					t.Errorf("after the close, a new open reads %q (%v), want %q", b, err, c.new)
				}
			})
		})
	}
}

// TestCoherenceRemovedOnSourceIsGone: a file the kernel knows, removed on
// SOURCE: an open by that name through the mirror is ENOENT, not a node
// with no file, and an open that creates makes a new file (this is what
// SQLite does with its rollback journal).
func TestCoherenceRemovedOnSourceIsGone(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"a": "A", "j": "J"})
		e.start(mode...)
		for _, name := range []string{"a", "j"} {
			if b, err := os.ReadFile(filepath.Join(e.mnt, name)); err != nil || len(b) != 1 {
				t.Fatalf("read %s: %q, %v", name, b, err)
			}
			if err := os.Remove(filepath.Join(e.src, name)); err != nil {
				t.Fatal(err)
			}
		}
		_, err := os.Open(filepath.Join(e.mnt, "a"))
		wantErrno(t, "open of a name removed on SOURCE", err, syscall.ENOENT)
		f, err := os.OpenFile(filepath.Join(e.mnt, "j"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatalf("open O_CREAT of a name removed on SOURCE: %v", err)
		}
		defer f.Close()
		if _, err := f.WriteString("new"); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(e.src, "j")); err != nil || string(b) != "new" {
			t.Fatalf("SOURCE j: %q, %v", b, err)
		}
	})
}

// TestCoherenceZeroTimeoutsCacheNothing: with entry_timeout and
// attr_timeout "0s", a name removed on SOURCE is gone through the mirror
// at once, and a size changed there is seen at once.
func TestCoherenceZeroTimeoutsCacheNothing(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		e := newEnv(t)
		writeFiles(t, e.src, map[string]string{"a": "A", "b": "B"})
		e.start(append(mode, "--config", e.writePolicy("entry_timeout = \"0s\"\nattr_timeout = \"0s\"\n"))...)
		m := func(name string) string { return filepath.Join(e.mnt, name) }
		if _, err := os.Lstat(m("a")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(e.src, "a")); err != nil {
			t.Fatal(err)
		}
		_, err := os.Lstat(m("a"))
		wantErrno(t, "stat of a name removed on SOURCE", err, syscall.ENOENT)
		if _, err := os.Lstat(m("b")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.src, "b"), []byte("BBB"), 0o644); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Lstat(m("b")); err != nil || st.Size() != 3 {
			t.Fatalf("stat of a file grown on SOURCE: %v, %v; want size 3", st, err)
		}
	})
}

// sqliteWriter inserts k rows tagged side into db, one transaction each,
// each reading what is there (the row count) as it writes: a writer that
// read a stale page would write a wrong count or a malformed file.
func sqliteWriter(db, side string, k int) ([]byte, error) {
	var script strings.Builder
	script.WriteString(".bail on\n.timeout 20000\n")
	for i := 0; i < k; i++ {
		fmt.Fprintf(&script, "BEGIN IMMEDIATE;\nINSERT INTO t VALUES('%s', %d, (SELECT count(*) FROM t));\nCOMMIT;\n", side, i)
	}
	cmd := exec.Command("sqlite3", db)
	cmd.Stdin = strings.NewReader(script.String())
	return cmd.CombinedOutput()
}

// sqliteQuery runs one statement on db and returns its output.
func sqliteQuery(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := exec.Command("sqlite3", db, sql).CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s %q: %v: %s", db, sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// sqliteBothSides has one SQLite writer on each side of db, in journal
// mode jmode, and checks the database afterwards.
func sqliteBothSides(t *testing.T, jmode, policy string, mode ...string) {
	const k = 150
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Fatal("sqlite3 is not installed (scripts/test-deps)")
	}
	e := newEnv(t)
	if policy != "" {
		mode = append(mode, "--config", e.writePolicy(policy))
	}
	e.start(mode...)
	src, mnt := filepath.Join(e.src, "db"), filepath.Join(e.mnt, "db")
	if got := sqliteQuery(t, src, "PRAGMA journal_mode="+jmode+"; CREATE TABLE t(side TEXT, i INT, seen INT);"); got != jmode {
		t.Fatalf("journal mode %q, want %s", got, jmode)
	}
	var wg sync.WaitGroup
	outs, errs := make([][]byte, 2), make([]error, 2)
	for i, db := range []string{mnt, src} {
		wg.Add(1)
		go func() { defer wg.Done(); outs[i], errs[i] = sqliteWriter(db, []string{"M", "S"}[i], k) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %s: %v: %s", []string{"M", "S"}[i], err, outs[i])
		}
	}
	for _, db := range []string{src, mnt} {
		if got := sqliteQuery(t, db, "PRAGMA integrity_check;"); got != "ok" {
			t.Errorf("%s: integrity_check: %s", db, got)
		}
		if got := sqliteQuery(t, db, "SELECT count(*), count(DISTINCT seen) FROM t;"); got != fmt.Sprintf("%d|%d", 2*k, 2*k) {
			t.Errorf("%s: rows|distinct counts seen: %s, want %d|%d", db, got, 2*k, 2*k)
		}
	}
}

// TestCoherenceSQLiteRollbackJournal: SQLite in rollback-journal mode with
// one writer on each side, in both modes, with the default cache timeouts:
// each side's journal, removed by the other, is created anew through the
// mirror (no SQLITE_CANTOPEN), and the mirror side reads what SOURCE's
// writer committed because SQLite locks the database before it reads it,
// and a lock granted through the mirror drops the kernel's pages and
// attributes of the file (handles.go, synchronized).
func TestCoherenceSQLiteRollbackJournal(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		sqliteBothSides(t, "delete", "", mode...)
	})
}

// TestCoherenceSQLiteWAL: SQLite in WAL mode with one writer on each side,
// with passthrough only. WAL's -shm file is a shared memory map; the two
// sides share it only where their pages are the same pages, and without
// passthrough the mirror's are copies (SQLite's documentation: WAL does
// not work over a network file system, for the same reason).
func TestCoherenceSQLiteWAL(t *testing.T) {
	sqliteBothSides(t, "wal", "", modes["passthrough"]...)
}
