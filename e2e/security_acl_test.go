package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// POSIX ACLs: whatever an ACL on SOURCE denies or grants a user, it denies
// or grants her through the mirror too, though root serves her; and what
// she creates under a default ACL gets the ACL and mode it gets on SOURCE.

// requireACL skips where setfacl is missing (.ci/run installs it).
func requireACL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("setfacl"); err != nil {
		t.Skip("setfacl missing: apt-get install acl")
	}
}

func setfacl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("setfacl", args...).CombinedOutput(); err != nil {
		t.Fatalf("setfacl %v: %v: %s", args, err, out)
	}
}

// getfacl is path's ACL, without the header that names the file.
func getfacl(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("getfacl", "--omit-header", "--numeric", path).CombinedOutput()
	if err != nil {
		t.Fatalf("getfacl %s: %v: %s", path, err, out)
	}
	return string(out)
}

// refused says whether the command, run as the hostile user, was refused
// for lack of permission.
func refused(t *testing.T, name string, args ...string) (bool, string) {
	t.Helper()
	out, err := asAdversary(t, name, args...)
	return err != nil && strings.Contains(out, "Permission denied"), out
}

// TestACLThatDeniesAUserDeniesHerThroughTheMirror: a folder whose mode lets
// everyone in, with an ACL entry that shuts her out, shuts her out of the
// mirror too: no listing of it, and no file below it.
func TestACLThatDeniesAUserDeniesHerThroughTheMirror(t *testing.T) {
	requireACL(t)
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			adversary(t)
			e := newEnv(t)
			openUp(e)
			acl := filepath.Join(e.src, "acl")
			os.MkdirAll(filepath.Join(acl, "sub"), 0o755)
			os.WriteFile(filepath.Join(acl, "sub", "file"), []byte("secret"), 0o644)
			setfacl(t, "-m", "u:"+advName+":---", acl)
			for _, root := range []string{e.src, e.mnt} {
				if root == e.mnt {
					e.start(append([]string{"-o", "allow_other"}, opts...)...)
				}
				if ok, out := refused(t, "ls", filepath.Join(root, "acl")); !ok {
					t.Errorf("ls %s/acl as the denied user: %q", root, out)
				}
				if ok, out := refused(t, "cat", filepath.Join(root, "acl", "sub", "file")); !ok {
					t.Errorf("cat %s/acl/sub/file as the denied user: %q", root, out)
				}
			}
		})
	}
}

// TestACLThatGrantsAUserLetsHerThroughTheMirror: a file and a folder whose
// mode bits keep her out, with ACL entries that let her in, let her in
// through the mirror too.
func TestACLThatGrantsAUserLetsHerThroughTheMirror(t *testing.T) {
	requireACL(t)
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			adversary(t)
			e := newEnv(t)
			openUp(e)
			dir := filepath.Join(e.src, "granted")
			os.Mkdir(dir, 0o700)
			os.WriteFile(filepath.Join(dir, "file"), []byte("shared"), 0o600)
			setfacl(t, "-m", "u:"+advName+":rx", dir)
			setfacl(t, "-m", "u:"+advName+":r", filepath.Join(dir, "file"))
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			for _, root := range []string{e.src, e.mnt} {
				if out, err := asAdversary(t, "ls", filepath.Join(root, "granted")); err != nil || out != "file\n" {
					t.Errorf("ls %s/granted as the granted user: %v, %q", root, err, out)
				}
				if out, err := asAdversary(t, "cat", filepath.Join(root, "granted", "file")); err != nil || out != "shared" {
					t.Errorf("cat %s/granted/file as the granted user: %v, %q", root, err, out)
				}
			}
			if ok, out := refused(t, "sh", "-c", "echo x >> "+filepath.Join(e.mnt, "granted", "file")); !ok {
				t.Errorf("writing a file the ACL lets her only read: %q", out)
			}
		})
	}
}

// TestDefaultACLHandedDownAsOnSource: what she creates through the mirror
// in a folder with a default ACL gets the same ACL and mode as what she
// creates there on SOURCE, whatever her umask (a default ACL replaces it);
// in a folder without one, her umask applies as on SOURCE.
func TestDefaultACLHandedDownAsOnSource(t *testing.T) {
	requireACL(t)
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			uid, gid := adversary(t)
			e := newEnv(t)
			openUp(e)
			for _, name := range []string{"dflt", "plain"} {
				dir := filepath.Join(e.src, name)
				os.Mkdir(dir, 0o755)
				os.Chown(dir, uid, gid)
			}
			setfacl(t, "-m", "d:u::rwx,d:g::rwx,d:o::rx,d:u:0:rwx", filepath.Join(e.src, "dflt"))
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			for _, name := range []string{"dflt", "plain"} {
				for _, root := range []string{e.src, e.mnt} {
					dir := filepath.Join(root, name)
					script := "umask 027 && touch " + dir + "/f-" + filepath.Base(root) +
						" && mkdir " + dir + "/d-" + filepath.Base(root)
					if out, err := asAdversary(t, "sh", "-c", script); err != nil {
						t.Fatalf("creating in %s: %v, %s", dir, err, out)
					}
				}
				dir := filepath.Join(e.src, name)
				for _, kind := range []string{"f-", "d-"} {
					direct, mirrored := filepath.Join(dir, kind+filepath.Base(e.src)), filepath.Join(dir, kind+filepath.Base(e.mnt))
					a, b := getfacl(t, direct), getfacl(t, mirrored)
					if a != b {
						t.Errorf("%s%s: made on SOURCE:\n%s\nmade through the mirror:\n%s", name, "/"+kind, a, b)
					}
					fa, errA := os.Lstat(direct)
					fb, errB := os.Lstat(mirrored)
					if errA != nil || errB != nil || fa.Mode() != fb.Mode() {
						t.Errorf("%s/%s: mode %v on SOURCE, %v through the mirror (%v, %v)", name, kind, fa.Mode(), fb.Mode(), errA, errB)
					}
				}
			}
		})
	}
}

// TestFolderSwappedInAtANodesNameIsNotThatNode: in a shared folder without
// the sticky bit she may rename anyone's folder to the name of one of hers
// that the kernel knows. The mirror, opening that node's folder again by
// name as root, must not list the other folder (opendir) nor look names up
// in it (a folder kept open for the node); she is told what SOURCE tells
// her.
func TestFolderSwappedInAtANodesNameIsNotThatNode(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			uid, gid := adversary(t)
			e := newEnv(t)
			openUp(e)
			shared := filepath.Join(e.src, "shared")
			os.Mkdir(shared, 0o777)
			os.Chmod(shared, 0o777)
			probes := map[string]string{"list": "ls %s", "look": "stat -c %%n %s/secret-name"}
			for name := range probes {
				victim := filepath.Join(shared, "victim-"+name)
				os.Mkdir(victim, 0o700)
				os.WriteFile(filepath.Join(victim, "secret-name"), []byte("s"), 0o600)
				os.Mkdir(filepath.Join(shared, name), 0o755)
				os.Chown(filepath.Join(shared, name), uid, gid)
			}
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			for name, probe := range probes {
				mine, at := filepath.Join(shared, name), filepath.Join(e.mnt, "shared", name)
				// The kernel knows her folder's node, and no more (no listing,
				// no folder kept open for it); then root's takes its name.
				script := fmt.Sprintf("stat %s >/dev/null && mv %s %s.old && mv %s %s && "+probe,
					at, mine, mine, filepath.Join(shared, "victim-"+name), mine, at)
				out, err := asAdversary(t, "sh", "-c", script)
				if err == nil || strings.Contains(out, "secret-name\n") || !strings.Contains(out, "Permission denied") {
					t.Errorf("%s: %v, %q", fmt.Sprintf(probe, at), err, out)
				}
			}
		})
	}
}

// TestSourceWithoutACLs: on a SOURCE that has no ACLs, which answers
// EOPNOTSUPP for them (sysfs here, as FAT and others), the kernel, asking
// for them at each check, is told there are none, and the mode bits decide,
// for others as for the owner.
func TestSourceWithoutACLs(t *testing.T) {
	const src = "/sys/kernel"
	if _, err := os.Stat(src + "/uevent_seqnum"); err != nil {
		t.Skip(err)
	}
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			adversary(t)
			e := newEnv(t)
			openUp(e)
			e.src = src
			e.start(append([]string{"-o", "allow_other", "-o", "ro"}, opts...)...)
			if out, err := asAdversary(t, "ls", e.mnt); err != nil || !strings.Contains(out, "uevent_seqnum\n") {
				t.Errorf("ls as another user: %v, %q", err, out)
			}
			if out, err := asAdversary(t, "cat", filepath.Join(e.mnt, "uevent_seqnum")); err != nil || strings.TrimSpace(out) == "" {
				t.Errorf("cat as another user: %v, %q", err, out)
			}
		})
	}
}

// TestACLChangedOnSourceIsSeen: the kernel keeps a node's ACLs as long as
// its attributes. An entry taken away from a folder on SOURCE shuts her out
// once they expire (the attribute timeout: a second; what she opens is
// opened as her, so SOURCE refuses a file at once); one given on SOURCE
// lets her in at once, as a refusal makes the kernel fetch both again.
func TestACLChangedOnSourceIsSeen(t *testing.T) {
	requireACL(t)
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			adversary(t)
			e := newEnv(t)
			openUp(e)
			dir := filepath.Join(e.src, "dir")
			os.Mkdir(dir, 0o700)
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			at := filepath.Join(e.mnt, "dir")
			if ok, out := refused(t, "ls", at); !ok {
				t.Fatalf("ls of a 0700 folder of root's: %q", out)
			}
			setfacl(t, "-m", "u:"+advName+":rx", dir)
			if out, err := asAdversary(t, "ls", at); err != nil {
				t.Errorf("ls right after an ACL let her in: %v, %q", err, out)
			}
			setfacl(t, "-m", "u:"+advName+":---", dir)
			start := time.Now()
			eventually(t, "the ACL taken away on SOURCE shuts her out", func() bool {
				ok, _ := refused(t, "ls", at)
				return ok
			})
			d := time.Since(start)
			t.Logf("a revoked entry was honoured for %v", d)
			if d > 3*time.Second {
				t.Errorf("a revoked ACL entry was honoured for %v", d)
			}
		})
	}
}
