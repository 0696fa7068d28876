package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"mirrorfs/daemon"
)

// writePolicy replaces the policy file.
func (e *env) writePolicy(text string) string {
	e.t.Helper()
	path := filepath.Join(e.dir, "policy.toml")
	if err := os.WriteFile(path+".new", []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *env) state() daemon.State {
	e.t.Helper()
	var s daemon.State
	b, err := os.ReadFile(daemon.StatePath(e.pidf))
	if err != nil {
		e.t.Fatalf("state file: %v", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		e.t.Fatalf("state file %s: %v", b, err)
	}
	return s
}

// reload rewrites the policy, sends SIGHUP and waits until the daemon has
// recorded the outcome; it returns that outcome.
func (e *env) reload(text string) daemon.Reload {
	e.t.Helper()
	e.writePolicy(text)
	return e.hup()
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

func TestPolicyReadOnlyToggle(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "f"), []byte("data"), 0o644)
	e.start("--config", e.writePolicy("read_only = false\n"))
	held, err := os.OpenFile(filepath.Join(e.mnt, "f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	if r := e.reload("read_only = true\n"); !r.OK {
		t.Fatalf("reload: %+v", r)
	}
	m := func(name string) string { return filepath.Join(e.mnt, name) }
	_, err = os.OpenFile(m("f"), os.O_WRONLY, 0)
	wantErrno(t, "open for writing", err, syscall.EROFS)
	_, err = os.Create(m("new"))
	wantErrno(t, "create", err, syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(m("d"), 0o755), syscall.EROFS)
	wantErrno(t, "remove", os.Remove(m("f")), syscall.EROFS)
	wantErrno(t, "rename", os.Rename(m("f"), m("g")), syscall.EROFS)
	wantErrno(t, "symlink", os.Symlink("f", m("l")), syscall.EROFS)
	wantErrno(t, "link", os.Link(m("f"), m("h")), syscall.EROFS)
	wantErrno(t, "chmod", os.Chmod(m("f"), 0o600), syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(m("f"), 0), syscall.EROFS)
	wantErrno(t, "setxattr", syscall.Setxattr(m("f"), "user.x", []byte("1"), 0), syscall.EROFS)
	wantErrno(t, "fallocate", syscall.Fallocate(int(held.Fd()), 0, 0, 4096), syscall.EROFS)
	if b, err := os.ReadFile(m("f")); err != nil || string(b) != "data" {
		t.Errorf("reads under read_only: %q, %v", b, err)
	}
	if _, err := held.WriteString("+old handle"); err != nil {
		t.Errorf("a handle opened for writing before the switch lost its access: %v", err)
	}

	if r := e.reload("read_only = false\n"); !r.OK {
		t.Fatalf("reload: %+v", r)
	}
	if err := os.WriteFile(m("new"), []byte("x"), 0o644); err != nil {
		t.Errorf("write after read_only = false: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.src, "f")); string(b) != "data+old handle" {
		t.Errorf("source holds %q", b)
	}
}

// names lists dir: its names, sorted, separated by spaces.
func names(dir string) string {
	ents, _ := os.ReadDir(dir)
	var s []string
	for _, e := range ents {
		s = append(s, e.Name())
	}
	return strings.Join(s, " ")
}

func TestPolicyHideTakesEffectAtOnce(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "secret.txt"), []byte("s"), 0o644)
	os.WriteFile(filepath.Join(e.src, "visible.txt"), []byte("v"), 0o644)
	os.Mkdir(filepath.Join(e.src, "app"), 0o755)
	os.WriteFile(filepath.Join(e.src, "app", ".env"), []byte("TOKEN"), 0o644)
	os.WriteFile(filepath.Join(e.src, ".env"), []byte("top"), 0o644)
	// Long cache timeouts: hiding must not rely on entries expiring.
	e.start("--config", e.writePolicy("entry_timeout = '1h'\nattr_timeout = '1h'\n"))
	m := func(name string) string { return filepath.Join(e.mnt, name) }
	for _, name := range []string{"secret.txt", "app/.env", ".env"} {
		if _, err := os.Stat(m(name)); err != nil {
			t.Fatalf("before hiding, %s: %v", name, err)
		}
	}
	// Listed once before: the kernel may keep the listing (FOPEN_CACHE_DIR).
	if got := names(e.mnt); got != ".env app secret.txt visible.txt" {
		t.Errorf("listing before hiding: %q", got)
	}
	names(m("app"))

	r := e.reload("entry_timeout = '1h'\nattr_timeout = '1h'\nhide = ['secret.txt', 'app/.env']\n")
	if !r.OK || !strings.Contains(r.Message, "hide=[secret.txt app/.env]") {
		t.Fatalf("reload: %+v", r)
	}
	_, err := os.Stat(m("secret.txt"))
	wantErrno(t, "stat of a cached, now hidden file", err, syscall.ENOENT)
	_, err = os.Stat(m("app/.env"))
	wantErrno(t, "stat of an anchored hidden path", err, syscall.ENOENT)
	if _, err := os.Stat(m(".env")); err != nil {
		t.Errorf("the anchored pattern app/.env hid the top-level .env: %v", err)
	}
	if got := names(e.mnt); got != ".env app visible.txt" {
		t.Errorf("listing: %q", got)
	}
	if got := names(m("app")); got != "" {
		t.Errorf("app listing: %q", got)
	}
	_, err = os.ReadFile(m("secret.txt"))
	wantErrno(t, "open hidden", err, syscall.ENOENT)
	_, err = os.Create(m("secret.txt"))
	wantErrno(t, "create over a hidden name", err, syscall.EPERM)
	wantErrno(t, "rename onto a hidden name", os.Rename(m("visible.txt"), m("secret.txt")), syscall.EPERM)
	wantErrno(t, "link to a hidden name", os.Link(m("visible.txt"), m("secret.txt")), syscall.EPERM)
	wantErrno(t, "link from a hidden name", os.Link(m("secret.txt"), m("copy")), syscall.ENOENT)
	wantErrno(t, "remove hidden", os.Remove(m("secret.txt")), syscall.ENOENT)
	wantErrno(t, "rename hidden away", os.Rename(m("secret.txt"), m("x")), syscall.ENOENT)
	wantErrno(t, "mkdir over a hidden name", os.Mkdir(m("app/.env"), 0o755), syscall.EPERM)
	if b, _ := os.ReadFile(filepath.Join(e.src, "secret.txt")); string(b) != "s" {
		t.Errorf("the hidden file changed on the source: %q", b)
	}

	e.reload("entry_timeout = '1h'\n")
	if b, err := os.ReadFile(m("secret.txt")); err != nil || string(b) != "s" {
		t.Errorf("after unhiding: %q, %v", b, err)
	}
	if got := names(m("app")); got != ".env" {
		t.Errorf("app listing after unhiding: %q", got)
	}
}

func TestPolicyBrokenReloadKeepsTheOld(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "x"), nil, 0o644)
	e.start("--config", e.writePolicy("hide = ['x']\n"))
	r := e.reload("hide = ['x']\nread_only = 'yes'\n")
	path := filepath.Join(e.dir, "policy.toml")
	if r.OK || !strings.HasPrefix(r.Message, path+`:2: key "read_only"`) {
		t.Errorf("recorded %+v, want a failure naming %s:2 and the key", r, path)
	}
	if !strings.Contains(e.log(), "reload failed; the policy in force stays") || !strings.Contains(e.log(), path+":2") {
		t.Errorf("log:\n%s", e.log())
	}
	_, err := os.Stat(filepath.Join(e.mnt, "x"))
	wantErrno(t, "x after a broken reload", err, syscall.ENOENT)
	if err := os.WriteFile(filepath.Join(e.mnt, "y"), nil, 0o644); err != nil {
		t.Errorf("writes after a broken reload: %v", err)
	}
}

func TestStartWithBrokenPolicyRefused(t *testing.T) {
	e := newEnv(t)
	path := e.writePolicy("hide = ['[x']\n")
	r := mirrorfs(t, e.dir, e.args("-o", "config=policy.toml")...)
	want := fmt.Sprintf("mirrorfs: %s:1: key \"hide\": pattern \"[x\": syntax error in pattern; expected a glob pattern (*, ?, [a-z], \\ to escape)\n", path)
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, %q; want 1, %q", r.code, r.stderr, want)
	}
	if mounted(e.mnt) || exists(e.pidf) {
		t.Error("a refused start left a mount or pidfile")
	}
}

func TestCheckConfig(t *testing.T) {
	e := newEnv(t)
	good := e.writePolicy("read_only = true\nhide = ['*.key']\n")
	r := mirrorfs(t, e.dir, "--check-config", good)
	if r.code != 0 || r.stdout != fmt.Sprintf("mirrorfs: %s: ok (read_only=true hide=[*.key])\n", good) {
		t.Errorf("good file: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	e.writePolicy("read_only = true\nfrobnicate = 1\n")
	r = mirrorfs(t, e.dir, "--check-config", "policy.toml")
	if r.code != 1 || r.stderr != "mirrorfs: policy.toml:2: key \"frobnicate\": unknown key; expected one of attr_timeout, entry_timeout, hide, log_level, read_only\n" {
		t.Errorf("bad file: exit %d, %q", r.code, r.stderr)
	}
	e.writePolicy("read_only = true\n\nentry_timeout = 5\n")
	r = mirrorfs(t, e.dir, "--check-config", "policy.toml")
	if r.code != 1 || r.stderr != "mirrorfs: policy.toml:3: key \"entry_timeout\": 5 is not a duration; expected a string like \"1s\" or \"250ms\"\n" {
		t.Errorf("bad file: exit %d, %q", r.code, r.stderr)
	}
	if len(daemonsFor(t, e.dir)) != 0 || mounted(e.mnt) {
		t.Error("--check-config started something")
	}
}

// TestSIGHUPStorm reloads 500 times, alternating policies, while workers
// read and write through the mirror: the only errors allowed are the
// policy's own (EROFS, ENOENT for the hidden name, EPERM to create it).
func TestSIGHUPStorm(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "shared"), []byte("shared"), 0o644)
	policies := []string{"read_only = false\n", "read_only = true\nhide = ['hidden*']\n", "hide = ['*.tmp', 'hidden*']\n"}
	e.start("--config", e.writePolicy(policies[0]))
	pid := e.pid()
	stopClients := clients(t, e.mnt, 2) // load from other processes too
	defer stopClients()

	var ops, unexpected atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var stops []func()
	for w := 0; w < 4; w++ {
		stops = append(stops, repeat(func(i int) {
			for _, err := range workerStep(e.mnt, w, i) {
				ops.Add(1)
				if err != nil && !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EPERM) {
					unexpected.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}))
	}
	for i := 0; i < 500; i++ {
		if r := e.reload(policies[i%len(policies)]); !r.OK {
			t.Fatalf("reload %d: %+v", i, r)
		}
	}
	for _, stop := range stops {
		stop()
	}
	if unexpected.Load() > 0 {
		t.Errorf("%d of %d operations failed unexpectedly; first: %v", unexpected.Load(), ops.Load(), firstErr)
	}
	if syscall.Kill(pid, 0) != nil || !mounted(e.mnt) {
		t.Fatal("the daemon died in the SIGHUP storm")
	}
	t.Logf("%d operations, %d hangups logged", ops.Load(), strings.Count(e.log(), "signal=hangup"))
	syscall.Kill(pid, syscall.SIGTERM)
	e.stopped(pid)
}

// workerStep does a few operations through the mirror and returns their errors.
func workerStep(mnt string, w, i int) []error {
	own := filepath.Join(mnt, fmt.Sprintf("w%d-%d.tmp", w, i%4))
	hidden := filepath.Join(mnt, fmt.Sprintf("hidden%d", w))
	errs := []error{os.WriteFile(own, []byte("payload"), 0o644)}
	_, err := os.ReadFile(filepath.Join(mnt, "shared"))
	errs = append(errs, err)
	_, err = os.ReadDir(mnt)
	errs = append(errs, err)
	errs = append(errs, os.WriteFile(hidden, []byte("h"), 0o644))
	_, err = os.Stat(own)
	return append(errs, err, os.Remove(own))
}

// TestReadOnlyCoversIoctls: chattr needs only a read-only handle, and the
// loopback would run it on the source as root.
func TestReadOnlyCoversIoctls(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "f"), []byte("x"), 0o644)
	e.start("--config", e.writePolicy("read_only = true\n"))
	f, err := os.Open(filepath.Join(e.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Errorf("FS_IOC_GETFLAGS under read_only: %v", err)
	}
	err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|0x80)) // FS_NOATIME_FL
	wantErrno(t, "FS_IOC_SETFLAGS under read_only", err, syscall.EROFS)
}

// TestRenameCannotUnhide: renaming a folder on the way to a path hidden by
// an anchored pattern would show the hidden entry under a new path.
func TestRenameCannotUnhide(t *testing.T) {
	e := newEnv(t)
	os.MkdirAll(filepath.Join(e.src, "etc", "secret"), 0o755)
	os.WriteFile(filepath.Join(e.src, "etc", "secret", "a"), []byte("s"), 0o644)
	os.Mkdir(filepath.Join(e.src, "other"), 0o755)
	e.start("--config", e.writePolicy("hide = ['etc/secret']\n"))
	m := func(name string) string { return filepath.Join(e.mnt, name) }
	wantErrno(t, "rename etc", os.Rename(m("etc"), m("etc2")), syscall.EPERM)
	wantErrno(t, "exchange other with etc", unix.Renameat2(unix.AT_FDCWD, m("other"), unix.AT_FDCWD, m("etc"), unix.RENAME_EXCHANGE), syscall.EPERM)
	if _, err := os.ReadFile(m("etc2/secret/a")); err == nil {
		t.Error("the hidden file is readable under a new path")
	}
	if err := os.Rename(m("other"), m("other2")); err != nil {
		t.Errorf("renaming an unrelated folder: %v", err)
	}
}

// TestMovedListingFollowsPathPatterns: the kernel keeps folder listings
// under path patterns too; a folder moved, or one below it, to where a
// pattern hides an entry must not show it from the listing kept before.
func TestMovedListingFollowsPathPatterns(t *testing.T) {
	e := newEnv(t)
	for _, f := range []string{"other/secret", "other/x/secret", "other/x/y"} {
		os.MkdirAll(filepath.Join(e.src, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(e.src, f), []byte("s"), 0o644)
	}
	// Long timeouts: only the move may drop the kept listings.
	e.start("--config", e.writePolicy("entry_timeout = '1h'\nattr_timeout = '1h'\nhide = ['etc/secret', 'etc/x/secret']\n"))
	m := func(name string) string { return filepath.Join(e.mnt, name) }
	for range 2 { // the first open fills the kept listing, the second reads it
		if got, got2 := names(m("other")), names(m("other/x")); got != "secret x" || got2 != "secret y" {
			t.Fatalf("before the move: other: %q, other/x: %q", got, got2)
		}
	}
	if err := os.Rename(m("other"), m("etc")); err != nil {
		t.Fatal(err)
	}
	if got := names(m("etc")); got != "x" {
		t.Errorf("the moved folder lists %q, want x", got)
	}
	if got := names(m("etc/x")); got != "y" {
		t.Errorf("a folder below the moved one lists %q, want y", got)
	}
}
