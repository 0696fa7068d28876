package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// -o uid=, gid=, umask=: what a stat through the mirror shows, and that the
// shown owner is granted nothing SOURCE does not grant her.

// startMapped starts a mirror of e with allow_other, the mapping opts and
// the mode's options.
func startMapped(e *env, mode []string, opts string) {
	e.start(append([]string{"-o", "allow_other," + opts}, mode...)...)
}

// ownerMode is "UID:GID:MODE" (octal permission bits) of path, as the
// hostile user's stat sees it.
func ownerModeAsAdversary(t *testing.T, path string) string {
	t.Helper()
	out, err := asAdversary(t, "stat", "-c", "%u:%g:%a", path)
	if err != nil {
		t.Fatalf("stat %s as the hostile user: %v, %s", path, err, out)
	}
	return strings.TrimSpace(out)
}

func ownerModeOnSource(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d:%o", st.Uid, st.Gid, st.Mode&0o7777)
}

func TestIDMapShowsTheMappedOwnerAndMode(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		uid, gid := adversary(t)
		e := newEnv(t)
		openUp(e)
		file := filepath.Join(e.src, "f")
		os.WriteFile(file, []byte("data"), 0o644)
		os.Mkdir(filepath.Join(e.src, "d"), 0o755)
		os.Symlink("f", filepath.Join(e.src, "l"))
		startMapped(e, mode, fmt.Sprintf("uid=%d,gid=%s,umask=027", uid, advName))
		want := func(name, perm string) {
			t.Helper()
			if got, w := ownerModeAsAdversary(t, filepath.Join(e.mnt, name)), fmt.Sprintf("%d:%d:%s", uid, gid, perm); got != w {
				t.Errorf("%s shows %s, want %s", name, got, w)
			}
		}
		want("f", "640")
		want("d", "750")
		want("l", "777") // a symlink's bits mean nothing: kept
		want("", "750")  // the mountpoint, SOURCE's 0755 root
		// An open file (a passthrough one in that mode) shows the same.
		out, err := asAdversary(t, "sh", "-c", `exec 3<"$1" && stat -L -c %u:%g:%a /proc/self/fd/3`, "sh", filepath.Join(e.mnt, "f"))
		if want := fmt.Sprintf("%d:%d:640", uid, gid); err != nil || strings.TrimSpace(out) != want {
			t.Errorf("f, open, shows %v %q, want %s", err, out, want)
		}
		// ls -l lists through READDIRPLUS: the same owner there.
		out, err = asAdversary(t, "ls", "-ln", e.mnt)
		if err != nil || !strings.Contains(out, fmt.Sprintf("%d %d", uid, gid)) || strings.Contains(out, " 0 0 ") {
			t.Errorf("ls -ln of the mirror: %v\n%s", err, out)
		}
		if got := ownerModeOnSource(t, file); got != "0:0:644" {
			t.Errorf("viewing changed SOURCE: f is %s there", got)
		}
	})
}

// TestIDMapGrantsNothingBeyondSource plays the shown owner: every file and
// folder of root's shows as hers, so the kernel lets her try everything;
// SOURCE must refuse her what it refuses her directly, even where root has
// walked (and the kernel cached) the same path through the mirror first.
func TestIDMapGrantsNothingBeyondSource(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		uid, gid := adversary(t)
		e := newEnv(t)
		openUp(e)
		writeFiles(t, e.src, map[string]string{"vault/inner": "s1", "vault/pub/file": "s2", "open/victim": "v", "open/secret": "s3", "open/readable": "r"})
		os.Chmod(filepath.Join(e.src, "vault"), 0o700)
		os.Chmod(filepath.Join(e.src, "open", "secret"), 0o600)
		startMapped(e, mode, fmt.Sprintf("uid=%d,gid=%d", uid, gid))
		// root walks and lists everything first: the kernel knows every
		// entry, and keeps vault's listing.
		if _, err := os.ReadDir(filepath.Join(e.mnt, "vault")); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"vault/inner", "vault/pub/file", "open/secret"} {
			if _, err := os.ReadFile(filepath.Join(e.mnt, name)); err != nil {
				t.Fatalf("root reading %s: %v", name, err)
			}
		}
		if got := ownerModeAsAdversary(t, filepath.Join(e.mnt, "open", "secret")); got != fmt.Sprintf("%d:%d:600", uid, gid) {
			t.Fatalf("secret shows %s: the test needs it shown as the hostile user's", got)
		}
		if out, err := asAdversary(t, "cat", filepath.Join(e.mnt, "open", "readable")); err != nil || out != "r" {
			t.Errorf("reading a 0644 file: %v, %q", err, out)
		}
		refused := func(what string, args ...string) {
			t.Helper()
			if out, err := asAdversary(t, args[0], args[1:]...); err == nil {
				t.Errorf("the shown owner could %s: %s", what, out)
			}
		}
		m := func(name string) string { return filepath.Join(e.mnt, name) }
		refused("read root's 0600 file", "cat", m("open/secret"))
		refused("write root's 0600 file", "sh", "-c", "echo x >> "+m("open/secret"))
		refused("truncate root's 0644 file", "truncate", "-s", "0", m("open/victim"))
		refused("list root's 0700 folder", "ls", m("vault"))
		refused("stat into root's 0700 folder", "stat", m("vault/inner"))
		refused("read in root's 0700 folder", "cat", m("vault/inner"))
		refused("read below root's 0700 folder", "cat", m("vault/pub/file"))
		refused("chmod root's file", "chmod", "0666", m("open/victim"))
		refused("chown root's file to herself", "chown", strconv.Itoa(uid), m("open/victim"))
		refused("give herself an ACL entry on root's file", "setfacl", "-m", fmt.Sprintf("u:%d:rw", uid), m("open/secret"))
		refused("set root's file's times", "touch", "-d", "2001-01-01", m("open/victim"))
		refused("remove a file from root's folder", "rm", "-f", m("open/victim"))
		refused("make a file in root's folder", "touch", m("open/new"))
		refused("rename in root's folder", "mv", m("open/victim"), m("open/moved"))
		for name, want := range map[string]string{"open/secret": "0:0:600", "open/victim": "0:0:644", "vault": "0:0:700"} {
			if got := ownerModeOnSource(t, filepath.Join(e.src, name)); got != want {
				t.Errorf("%s on SOURCE is %s, want %s", name, got, want)
			}
		}
		for name, want := range map[string]string{"open/secret": "s3", "open/victim": "v"} {
			if b, err := os.ReadFile(filepath.Join(e.src, name)); err != nil || string(b) != want {
				t.Errorf("%s on SOURCE: %v, %q", name, err, b)
			}
		}
		if _, err := os.Lstat(filepath.Join(e.src, "open", "new")); err == nil {
			t.Errorf("a file was made in root's folder")
		}
	})
}

// TestIDMapSetIDNotClearedForTheShownOwner: the mirror clears a set-id
// file's bits as root when a writer who is not its owner asks (the kernel
// does so on a write); the shown owner must not get that for a chmod.
func TestIDMapSetIDNotClearedForTheShownOwner(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		uid, gid := adversary(t)
		e := newEnv(t)
		openUp(e)
		tool := filepath.Join(e.src, "tool")
		os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755)
		unix.Chmod(tool, 0o4755)
		startMapped(e, mode, fmt.Sprintf("uid=%d,gid=%d", uid, gid))
		held, err := os.Open(filepath.Join(e.mnt, "tool")) // an open file of root's
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		if out, err := asAdversary(t, "chmod", "0755", filepath.Join(e.mnt, "tool")); err == nil {
			t.Errorf("the shown owner cleared the setuid bit of root's file: %s", out)
		}
		if got := ownerModeOnSource(t, tool); got != "0:0:4755" {
			t.Errorf("tool on SOURCE is %s, want 0:0:4755", got)
		}
	})
}

// TestIDMapUmaskOnlyShown: umask= narrows the modes shown, and the kernel
// checks those (others are shut out of a 0644 file shown 0600), while a
// chmod and a create reach SOURCE with the modes asked for.
func TestIDMapUmaskOnlyShown(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		uid, gid := adversary(t)
		e := newEnv(t)
		openUp(e)
		os.WriteFile(filepath.Join(e.src, "public"), []byte("p"), 0o644)
		own := filepath.Join(e.src, "own")
		os.Mkdir(own, 0o755)
		os.Chown(own, uid, gid)
		startMapped(e, mode, "umask=066") // folders 0711: still searchable
		if got, want := ownerModeAsAdversary(t, filepath.Join(e.mnt, "public")), "0:0:600"; got != want {
			t.Errorf("public shows %s, want %s", got, want)
		}
		if out, err := asAdversary(t, "cat", filepath.Join(e.mnt, "public")); err == nil {
			t.Errorf("read a file shown 0600 as another user: %s", out)
		}
		f := filepath.Join(e.mnt, "own", "f")
		for _, args := range [][]string{{"sh", "-c", "umask 022 && echo x > " + f}, {"chmod", "0664", f}} {
			if out, err := asAdversary(t, args[0], args[1:]...); err != nil {
				t.Fatalf("%v as the owner: %v, %s", args, err, out)
			}
		}
		if got, want := ownerModeOnSource(t, filepath.Join(own, "f")), fmt.Sprintf("%d:%d:664", uid, gid); got != want {
			t.Errorf("f on SOURCE is %s, want %s (made and chmod'ed by its owner)", got, want)
		}
		if got, want := ownerModeAsAdversary(t, f), fmt.Sprintf("%d:%d:600", uid, gid); got != want {
			t.Errorf("f shows %s, want %s", got, want)
		}
	})
}

// TestIDMapChownRefused: a mapped owner or group is fixed in the view, so
// chown and chgrp through the mirror are refused, root's too, and SOURCE
// keeps its owner.
func TestIDMapChownRefused(t *testing.T) {
	bothModes(t, func(t *testing.T, mode ...string) {
		uid, gid := adversary(t)
		e := newEnv(t)
		openUp(e)
		file := filepath.Join(e.src, "f")
		os.WriteFile(file, []byte("x"), 0o644)
		startMapped(e, mode, fmt.Sprintf("uid=%d,gid=%d", uid, gid))
		m := filepath.Join(e.mnt, "f")
		if err := os.Chown(m, nobody, -1); !errors.Is(err, syscall.EPERM) {
			t.Errorf("root's chown through a mapped mirror: %v, want EPERM", err)
		}
		if err := os.Chown(m, -1, nobody); !errors.Is(err, syscall.EPERM) {
			t.Errorf("root's chgrp through a mapped mirror: %v, want EPERM", err)
		}
		if err := os.Chmod(m, 0o600); err != nil {
			t.Errorf("root's chmod through a mapped mirror: %v", err)
		}
		if got := ownerModeOnSource(t, file); got != "0:0:600" {
			t.Errorf("f on SOURCE is %s, want 0:0:600", got)
		}
	})
}

// TestIDMapOptionsRefused: a value that names no user, group or umask is
// a usage error that says what is wrong with it.
func TestIDMapOptionsRefused(t *testing.T) {
	e := newEnv(t)
	for opt, why := range map[string]string{
		"uid=no-such-user-here":  "unknown user",
		"gid=no-such-group-here": "unknown group",
		"umask=1000":             "more than 777",
		"umask=9":                "invalid syntax",
		"uid=4294967295":         "no id",
		"uid=":                   "empty",
	} {
		r := mirrorfs(t, e.dir, e.args("-o", opt)...)
		if r.code != 2 || !strings.Contains(r.stderr, opt+": ") || !strings.Contains(r.stderr, why) {
			t.Errorf("-o %s: exit %d, want 2 and %q: %s", opt, r.code, why, r.stderr)
		}
	}
}

// TestIDMapUsersMirrorRefusesMappedOwners: a daemon that is not root does
// every caller's request as its own user, so with allow_other a shown
// owner would borrow that user's access: refused at the start.
func TestIDMapUsersMirrorRefusesMappedOwners(t *testing.T) {
	uid, _ := adversary(t)
	out, err := asAdversary(t, bin, "-o", fmt.Sprintf("allow_other,uid=%d", uid), "/nonexistent-src", "/nonexistent-mnt")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "run mirrorfs as root") {
		t.Errorf("a user's mirror with allow_other,uid=: %v, %s", err, out)
	}
}
