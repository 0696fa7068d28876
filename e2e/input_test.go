package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRelativePaths(t *testing.T) {
	e := newEnv(t)
	e.pidf = filepath.Join(e.dir, "rel", "x.pid")
	e.logf = filepath.Join(e.dir, "rel.log")
	os.WriteFile(filepath.Join(e.src, "f"), []byte("rel"), 0o644)
	r := mirrorfs(t, e.dir, "src", "./mnt", "--pidfile", "rel/x.pid", "-o", "log=rel.log")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	e.pids = append(e.pids, e.pid())
	if !mounted(e.mnt) || e.pid() == 0 || !exists(e.logf) {
		t.Fatalf("relative paths were not resolved against the caller's directory %s", e.dir)
	}
	if m, _ := mountAt(e.mnt); m.Source != e.src {
		t.Errorf("mount source %q, want %q", m.Source, e.src)
	}
	if b, _ := os.ReadFile(filepath.Join(e.mnt, "f")); string(b) != "rel" {
		t.Errorf("mirror shows %q", b)
	}
}

// TestBadInput runs every refusal and checks the message, the exit code and
// that nothing is left running or mounted.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *env) []string // returns the arguments
		code  int
		want  string // the whole of stderr must be this one line, with {dir} replaced
	}{
		{"source missing", func(e *env) []string { os.Remove(e.src); return e.args() },
			1, "mirrorfs: source {dir}/src does not exist"},
		{"source is a file", func(e *env) []string { os.Remove(e.src); os.WriteFile(e.src, nil, 0o644); return e.args() },
			1, "mirrorfs: source {dir}/src is not a directory"},
		{"mountpoint missing", func(e *env) []string { os.Remove(e.mnt); return e.args() },
			1, "mirrorfs: mountpoint {dir}/mnt does not exist"},
		{"mountpoint parent missing", func(e *env) []string {
			return []string{e.src, filepath.Join(e.dir, "no", "mnt"), "--pidfile", e.pidf, "--log", e.logf}
		}, 1, "mirrorfs: mountpoint {dir}/no/mnt does not exist"},
		{"mountpoint is a file", func(e *env) []string { os.Remove(e.mnt); os.WriteFile(e.mnt, nil, 0o644); return e.args() },
			1, "mirrorfs: mountpoint {dir}/mnt is not a directory"},
		{"mountpoint is a symlink", func(e *env) []string {
			os.Symlink(e.mnt, filepath.Join(e.dir, "link"))
			return []string{e.src, filepath.Join(e.dir, "link"), "--pidfile", e.pidf, "--log", e.logf}
		}, 1, "mirrorfs: mountpoint {dir}/link is a symlink (to {dir}/mnt); give the directory itself"},
		{"pidfile owned by another user", func(e *env) []string {
			os.MkdirAll(filepath.Dir(e.pidf), 0o755)
			os.WriteFile(e.pidf, nil, 0o644)
			os.Chown(e.pidf, nobody, nobody)
			return e.args()
		}, 1, "mirrorfs: pidfile {dir}/run/mirrorfs.pid: belongs to uid 65534, not to us; refusing it"},
		{"mountpoint is the source", func(e *env) []string {
			return []string{e.src, e.src + "/.", "--pidfile", e.pidf, "--log", e.logf}
		}, 1, "mirrorfs: mountpoint {dir}/src is the source itself"},
		{"mountpoint inside the source", func(e *env) []string {
			os.Mkdir(filepath.Join(e.src, "in"), 0o755)
			return []string{e.src, filepath.Join(e.src, "in"), "--pidfile", e.pidf, "--log", e.logf}
		}, 1, "mirrorfs: mountpoint {dir}/src/in is inside the source {dir}/src (the mirror would contain itself)"},
		{"source inside the mountpoint", func(e *env) []string {
			os.Mkdir(filepath.Join(e.mnt, "in"), 0o755)
			return []string{filepath.Join(e.mnt, "in"), e.mnt, "--pidfile", e.pidf, "--log", e.logf}
		}, 1, "mirrorfs: source {dir}/mnt/in is inside the mountpoint {dir}/mnt (the mount would hide it)"},
		{"mountpoint holds another filesystem", func(e *env) []string {
			if err := unix.Mount("tmpfs", e.mnt, "tmpfs", 0, "size=1m"); err != nil {
				e.t.Fatal(err)
			}
			e.t.Cleanup(func() { unix.Unmount(e.mnt, unix.MNT_DETACH) })
			return e.args()
		}, 1, "mirrorfs: mountpoint {dir}/mnt is already a mountpoint (tmpfs from tmpfs)"},
		{"pidfile is a symlink", func(e *env) []string {
			os.MkdirAll(filepath.Dir(e.pidf), 0o755)
			os.Symlink("/etc/passwd", e.pidf)
			return e.args()
		}, 1, "mirrorfs: pidfile {dir}/run/mirrorfs.pid: is a symlink; refusing to follow it"},
		{"pidfile writable by others", func(e *env) []string {
			os.MkdirAll(filepath.Dir(e.pidf), 0o755)
			os.WriteFile(e.pidf, nil, 0o666)
			os.Chmod(e.pidf, 0o666)
			return e.args()
		}, 1, "mirrorfs: pidfile {dir}/run/mirrorfs.pid: is writable by others (mode 0666); refusing it"},
		{"pidfile folder under a file", func(e *env) []string {
			os.WriteFile(filepath.Join(e.dir, "file"), nil, 0o644)
			return []string{e.src, e.mnt, "--pidfile", filepath.Join(e.dir, "file", "x.pid"), "--log", e.logf}
		}, 1, "mirrorfs: pidfile {dir}/file/x.pid: mkdir {dir}/file: not a directory"},
		{"log folder under a file", func(e *env) []string {
			os.WriteFile(filepath.Join(e.dir, "file"), nil, 0o644)
			return []string{e.src, e.mnt, "--pidfile", e.pidf, "--log", filepath.Join(e.dir, "file", "x.log")}
		}, 1, "mirrorfs: log {dir}/file/x.log: mkdir {dir}/file: not a directory"},
		{"unknown mount option", func(e *env) []string { return e.args("-o", "ro,frobnicate") },
			2, `mirrorfs: unknown mount option "frobnicate" (see mirrorfs --help)`},
		{"unknown flag", func(e *env) []string { return e.args("--frobnicate") },
			2, `mirrorfs: unknown option "--frobnicate" (see mirrorfs --help)`},
		{"one argument", func(e *env) []string { return []string{e.src} },
			2, "mirrorfs: expected SOURCE and MOUNTPOINT, got 1 argument(s) (see mirrorfs --help)"},
		{"three arguments", func(e *env) []string { return []string{e.src, e.mnt, e.dir} },
			2, "mirrorfs: expected SOURCE and MOUNTPOINT, got 3 argument(s) (see mirrorfs --help)"},
		{"bad timeout", func(e *env) []string { return e.args("--ready-timeout", "0") },
			2, `mirrorfs: --ready-timeout: "0" is not a positive duration (e.g. 30s) (see mirrorfs --help)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			args := tc.setup(e)
			r := mirrorfs(t, e.dir, args...)
			want := strings.ReplaceAll(tc.want, "{dir}", e.dir)
			if r.code != tc.code || r.stderr != want+"\n" || r.stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q\nwant exit %d, stderr %q", r.code, r.stderr, r.stdout, tc.code, want+"\n")
			}
			if m, ok := mountAt(e.mnt); ok && m.FSType != "tmpfs" {
				t.Errorf("%s left mounted: %+v", e.mnt, m)
			}
			if exists(e.pidf) && !strings.HasPrefix(tc.name, "pidfile ") {
				t.Errorf("pidfile %s left behind", e.pidf)
			}
			if pids := daemonsFor(t, e.dir); len(pids) > 0 {
				t.Errorf("mirrorfs processes left running: %v", pids)
			}
		})
	}
}

// daemonsFor lists mirrorfs processes whose command line mentions dir.
func daemonsFor(t *testing.T, dir string) []string {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, ent := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmdline), bin+"\x00") {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if strings.Contains(string(cmdline), dir) && !strings.Contains(string(stat), ") Z ") {
			pids = append(pids, ent.Name())
		}
	}
	return pids
}

func TestHelpAndVersion(t *testing.T) {
	requireFUSE(t)
	r := mirrorfs(t, "/", "--help")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: mirrorfs [options] SOURCE MOUNTPOINT") {
		t.Errorf("--help: exit %d, %q", r.code, r.stdout)
	}
	r = mirrorfs(t, "/", "-V")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "mirrorfs ") {
		t.Errorf("-V: exit %d, %q", r.code, r.stdout)
	}
}
