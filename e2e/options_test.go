package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// superOptions are the file system's own options of the mount at mnt, as
// the last field of its mountinfo line shows them.
func superOptions(t *testing.T, mnt string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var opts string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mnt {
			opts = f[len(f)-1]
		}
	}
	return opts
}

// TestDefaultPermissions: -o default_permissions is accepted, and is what
// the kernel mount is (it comes with the POSIX ACLs the mirror has the
// kernel enforce): a root process without CAP_DAC_OVERRIDE is held to the
// mode bits, though the daemon serves root's requests as root.
func TestDefaultPermissions(t *testing.T) {
	uid, gid := adversary(t)
	for mode, extra := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			f := filepath.Join(e.src, "hers")
			os.WriteFile(f, []byte("private"), 0o600)
			os.Chown(f, uid, gid)
			e.start(append([]string{"-o", "default_permissions"}, extra...)...)
			if opts := superOptions(t, e.mnt); !strings.Contains(opts, "default_permissions") {
				t.Errorf("the kernel mount lacks default_permissions: %s", opts)
			}
			out, err := exec.Command("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
				"cat", filepath.Join(e.mnt, "hers")).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Permission denied") {
				t.Errorf("root without CAP_DAC_OVERRIDE read a 0600 file of another user: %v, %q", err, out)
			}
			if b, err := os.ReadFile(filepath.Join(e.mnt, "hers")); err != nil || string(b) != "private" {
				t.Errorf("root read %q, %v", b, err)
			}
			e.stopWithin(e.pid(), waitLimit)
		})
	}
}

// TestAllowRoot: -o allow_root lets root in and no one else; with
// allow_other it is refused, as libfuse refuses it.
func TestAllowRoot(t *testing.T) {
	adversary(t)
	for mode, extra := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			openUp(e)
			os.WriteFile(filepath.Join(e.src, "public"), []byte("p"), 0o644)
			e.start(append([]string{"-o", "allow_root"}, extra...)...)
			if b, err := os.ReadFile(filepath.Join(e.mnt, "public")); err != nil || string(b) != "p" {
				t.Errorf("root read %q, %v", b, err)
			}
			if out, err := asAdversary(t, "cat", filepath.Join(e.mnt, "public")); err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("another user read an allow_root mirror: %v, %q", err, out)
			}
			e.stopWithin(e.pid(), waitLimit)
		})
	}
	e := newEnv(t)
	r := mirrorfs(t, e.dir, e.args("-o", "allow_root,allow_other")...)
	if r.code != 2 || !strings.Contains(r.stderr, "exclude each other") || mounted(e.mnt) {
		t.Errorf("allow_root,allow_other: exit %d, %q", r.code, r.stderr)
	}
}

// TestNonemptySubtypeAndCacheOptions: nonempty is accepted (a folder with
// files is mounted on, as always), subtype=mirrorfs is accepted and the
// table shows fuse.mirrorfs; another subtype, kernel_cache and auto_cache
// are refused with their reasons and nothing is mounted.
func TestNonemptySubtypeAndCacheOptions(t *testing.T) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.mnt, "under"), nil, 0o644)
	os.WriteFile(filepath.Join(e.src, "f"), []byte("x"), 0o644)
	e.start("-o", "nonempty,subtype=mirrorfs")
	if m, _ := mountAt(e.mnt); m.FSType != "fuse.mirrorfs" {
		t.Errorf("the mount's type is %q", m.FSType)
	}
	if b, _ := os.ReadFile(filepath.Join(e.mnt, "f")); string(b) != "x" {
		t.Errorf("the mirror shows %q", b)
	}
	e.stopWithin(e.pid(), waitLimit)
	for opt, why := range map[string]string{
		"subtype=sshfs": "the mount's type stays fuse.mirrorfs",
		"kernel_cache":  "each open starts from fresh pages",
		"auto_cache":    "each open starts from fresh pages",
	} {
		r := mirrorfs(t, e.dir, e.args("-o", opt)...)
		if r.code != 2 || !strings.Contains(r.stderr, why) || mounted(e.mnt) {
			t.Errorf("-o %s: exit %d, %q; want 2 and %q", opt, r.code, r.stderr, why)
		}
	}
}

// TestLogLevelFlag: --log-level wins over the policy file's log_level, at
// the start and after a reload of a file that sets it.
func TestLogLevelFlag(t *testing.T) {
	for mode, extra := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			policy := e.writePolicy("log_level = \"debug\"\n")
			e.start(append([]string{"--config", policy, "--log-level", "warn"}, extra...)...)
			if strings.Contains(e.log(), "level=INFO") {
				t.Errorf("--log-level warn, and the log has INFO lines:\n%s", e.log())
			}
			if r := e.reload("log_level = \"info\"\nhide = ['x']\n"); !r.OK {
				t.Fatalf("reload: %+v", r)
			}
			if strings.Contains(e.log(), "level=INFO") {
				t.Errorf("after a reload setting log_level, the log has INFO lines:\n%s", e.log())
			}
			e.stopWithin(e.pid(), waitLimit)
		})
	}
	e := newEnv(t)
	if r := mirrorfs(t, e.dir, e.args("--log-level", "loud")...); r.code != 2 || !strings.Contains(r.stderr, "not a log level") {
		t.Errorf("--log-level loud: exit %d, %q", r.code, r.stderr)
	}
}

var semver = regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// TestVersion: --version names a version a user can quote (semver), the
// go-fuse of go.mod and the Go it was built with; the Makefile's version
// is the latest v-tag, or 0.0.0-dev+HASH without one.
func TestVersion(t *testing.T) {
	r := mirrorfs(t, ".", "--version")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	mod, _ := os.ReadFile("../go.mod")
	fuse := regexp.MustCompile(`github.com/hanwen/go-fuse/v2 (v\S+)`).FindSubmatch(mod)
	if r.code != 0 || len(lines) != 3 || !semver.MatchString(strings.TrimPrefix(lines[0], "mirrorfs ")) ||
		fuse == nil || lines[1] != "go-fuse "+string(fuse[1]) || !strings.HasPrefix(lines[2], runtime.Version()+" ") {
		t.Errorf("--version: exit %d, %q", r.code, r.stdout)
	}

	dir := t.TempDir()
	mk, _ := os.ReadFile("../Makefile")
	os.WriteFile(filepath.Join(dir, "Makefile"), mk, 0o644)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	version := func() string {
		t.Helper()
		cmd := exec.Command("make", "-s", "-n", "build")
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		m := regexp.MustCompile(`daemon\.Version=(\S+)'`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("make -n build: %s", out)
		}
		return string(m[1])
	}
	git("init", "-q")
	git("add", "Makefile")
	git("commit", "-qm", "x")
	if v := version(); !regexp.MustCompile(`^0\.0\.0-dev\+[0-9a-f]{12}$`).MatchString(v) {
		t.Errorf("untagged: version %q", v)
	}
	git("tag", "v1.4.2")
	if v := version(); v != "1.4.2" {
		t.Errorf("tagged v1.4.2: version %q", v)
	}
	os.WriteFile(filepath.Join(dir, "Makefile"), append(mk, '\n'), 0o644)
	if v := version(); v != "1.4.2-dirty" || !semver.MatchString(v) {
		t.Errorf("tagged, changed: version %q", v)
	}
}
