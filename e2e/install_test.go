package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shipped is a shipped example with the paths it names moved into e's
// folders (SOURCE, MOUNTPOINT, the policy file, the log folder).
func shipped(t *testing.T, e *env, name, policy, logDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../scripts/examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("/srv/data", e.src, "/mnt/data", e.mnt, "/etc/mirrorfs/data.toml", policy,
		"/var/log/mirrorfs", logDir).Replace(string(b))
}

// TestShippedExamples: the policy example passes --check-config; the
// settings example, read by the wrapper, starts a mirror with its policy
// and options; the fstab line parses (libmount) and mounts through
// mount.fuse3; the
// logrotate snippet, run by logrotate, rotates the log and the daemon
// writes on into a new one.
func TestShippedExamples(t *testing.T) {
	e := newEnv(t)
	policy := "../scripts/examples/data.toml"
	if r := mirrorfs(t, ".", "--check-config", policy); r.code != 0 {
		t.Fatalf("--check-config %s: exit %d, %s", policy, r.code, r.stderr)
	}
	policy, _ = filepath.Abs(policy)
	os.WriteFile(filepath.Join(e.src, "a.key"), nil, 0o644)

	c := newCtl(e, "")
	os.WriteFile(filepath.Join(c.conf, "t.env"), []byte(shipped(t, e, "data.env", policy, "")), 0o644)
	c.want("start", 0, "mirrorfs: mounted")
	e.pids = append(e.pids, e.pid())
	if exists(filepath.Join(e.mnt, "a.key")) {
		t.Error("the settings example's CONFIG was not applied")
	}
	if opts := superOptions(t, e.mnt); !strings.Contains(opts, "allow_other") {
		t.Errorf("the settings example's OPTIONS were not applied: %s", opts)
	}

	logDir := filepath.Join(e.dir, "log")
	conf := filepath.Join(e.dir, "logrotate.conf")
	os.WriteFile(conf, []byte(shipped(t, e, "logrotate", policy, logDir)), 0o644)
	hooks := filepath.Join(e.dir, "hooks")
	os.Mkdir(hooks, 0o755)
	ctlPath, _ := filepath.Abs("../scripts/mirrorfs-ctl")
	os.Symlink(ctlPath, filepath.Join(hooks, "mirrorfs-ctl"))
	if _, err := exec.LookPath("logrotate"); err != nil {
		t.Fatalf("logrotate is needed (apt-get install logrotate): %v", err)
	}
	rotate := exec.Command("logrotate", "-f", "-s", filepath.Join(e.dir, "logrotate.state"), conf)
	rotate.Env = append(os.Environ(), "PATH="+hooks+":"+os.Getenv("PATH"), "MIRRORFS="+bin, "MIRRORFS_CONF_DIR="+c.conf,
		"MIRRORFS_DEFAULTS=/nonexistent", "MIRRORFS_RUN_DIR="+filepath.Join(e.dir, "run"), "MIRRORFS_LOG_DIR="+logDir)
	if out, err := rotate.CombinedOutput(); err != nil {
		t.Fatalf("logrotate: %v: %s", err, out)
	}
	if !exists(e.logf + ".1") {
		t.Error("logrotate did not rotate the log")
	}
	if !strings.Contains(e.log(), "log reopened") {
		t.Errorf("the daemon does not write into the new log: %q", e.log())
	}
	c.want("stop", 0, "is free")

	tab := filepath.Join(e.dir, "fstab")
	line := shipped(t, e, "fstab", policy, "")
	line = strings.Replace(line, ",_netdev", ",_netdev,pidfile="+e.pidf+",log="+e.logf, 1)
	os.WriteFile(tab, []byte(line), 0o644)
	// libmount parses the line as mount(8) would; mount.fuse3 mounts it,
	// with this binary first on PATH (mount(8) gives its helpers a PATH of
	// its own).
	fields, err := exec.Command("findmnt", "-F", tab, "-n", "-r", "-o", "SOURCE,TARGET,FSTYPE,OPTIONS").Output()
	f := strings.Fields(string(fields))
	if err != nil || len(f) != 4 || f[0] != e.src || f[1] != e.mnt || f[2] != "fuse.mirrorfs" {
		t.Fatalf("findmnt -F (the fstab example): %v, %q", err, fields)
	}
	mount := exec.Command("mount.fuse3", f[0], f[1], "-t", strings.TrimPrefix(f[2], "fuse."), "-o", f[3])
	mount.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if out, err := mount.CombinedOutput(); err != nil {
		t.Fatalf("mount.fuse3 (the fstab example): %v: %s", err, out)
	}
	pid := e.pid()
	e.pids = append(e.pids, pid)
	if !mounted(e.mnt) || exists(filepath.Join(e.mnt, "a.key")) || os.WriteFile(filepath.Join(e.mnt, "w"), nil, 0o644) == nil {
		t.Error("the fstab example's mount lacks its options (ro, config=)")
	}
	if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	e.stopped(pid)
}

// TestManPage: mirrorfs --man renders with man -l without a warning, and
// shows every option of --help.
func TestManPage(t *testing.T) {
	r := mirrorfs(t, ".", "--man")
	cmd := exec.Command("man", "--warnings", "-l", "-")
	cmd.Stdin = strings.NewReader(r.stdout)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "MANWIDTH=200", "MAN_KEEP_FORMATTING=")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil || errOut.Len() > 0 || r.code != 0 {
		t.Fatalf("man -l: %v, %s (--man: exit %d)", err, errOut.String(), r.code)
	}
	page := strings.Join(strings.Fields(out.String()), " ")
	help := mirrorfs(t, ".", "--help").stdout
	n := 0
	for _, line := range strings.Split(help, "\n") {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if (indent == 2 || indent == 7) && strings.TrimSpace(line) != "" {
			term, _, _ := strings.Cut(strings.TrimSpace(line), "  ")
			n++
			if !strings.Contains(page, term) {
				t.Errorf("the man page lacks %q", term)
			}
		}
	}
	if n < 20 {
		t.Errorf("found only %d options in --help", n)
	}
}

// TestCtlCompletion: the bash completion passes shellcheck, completes the
// wrapper's verbs and the instances' names.
func TestCtlCompletion(t *testing.T) {
	script := "../scripts/completion/mirrorfs-ctl.bash"
	if out, err := exec.Command("shellcheck", "-s", "bash", script).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v: %s", err, out)
	}
	conf := t.TempDir()
	for _, n := range []string{"data", "backup", "docs"} {
		os.WriteFile(filepath.Join(conf, n+".env"), nil, 0o644)
	}
	complete := func(words ...string) string {
		t.Helper()
		args := append([]string{"-c", `source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _mirrorfs_ctl; echo "${COMPREPLY[*]}"`,
			script, "../scripts/mirrorfs-ctl"}, words...)
		cmd := exec.Command("bash", args...)
		cmd.Env = append(os.Environ(), "MIRRORFS_CONF_DIR="+conf)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("completion: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for words, want := range map[string]string{
		"":         "start stop restart upgrade reload force-reload status",
		"re":       "restart reload",
		"stop d":   "data docs",
		"start ":   "backup data docs",
		"status b": "backup",
	} {
		w := strings.Split(words, " ")
		if got := complete(w...); got != want {
			t.Errorf("completing %q: %q, want %q", words, got, want)
		}
	}
}

// TestMakeInstall: make install puts everything under DESTDIR/PREFIX
// without building a binary that is current (Go is not even there: GO=false),
// the units start the installed binary, and make uninstall removes it all.
func TestMakeInstall(t *testing.T) {
	requireFUSE(t)
	tree := t.TempDir()
	ls := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard")
	ls.Dir = ".."
	files, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Fields(string(files)) {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			continue // deleted in the work tree
		}
		os.MkdirAll(filepath.Join(tree, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(tree, f), b, 0o644)
	}
	b, _ := os.ReadFile(bin)
	os.WriteFile(filepath.Join(tree, "mirrorfs"), b, 0o755)
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(tree, "mirrorfs"), later, later)
	dest := filepath.Join(tree, "dest")
	mk := func(args ...string) (string, error) {
		cmd := exec.Command("make", append([]string{"-s", "-C", tree, "GO=false", "PREFIX=/opt/m", "DESTDIR=" + dest}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := mk("install"); err != nil {
		t.Fatalf("make install with a current binary and no Go: %v: %s", err, out)
	}
	want := []string{"opt/m/bin/mirrorfs", "opt/m/sbin/mirrorfs-ctl", "opt/m/share/man/man8/mirrorfs.8",
		"opt/m/share/bash-completion/completions/mirrorfs-ctl", "etc/systemd/system/mirrorfs@.service",
		"etc/systemd/system/mirrorfs-forking@.service", "opt/m/share/doc/mirrorfs/examples/data.toml",
		"opt/m/share/doc/mirrorfs/examples/data.env", "opt/m/share/doc/mirrorfs/examples/fstab",
		"opt/m/share/doc/mirrorfs/examples/logrotate"}
	for _, f := range want {
		if !exists(filepath.Join(dest, f)) {
			t.Errorf("make install did not install %s", f)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/mirrorfs@.service"))
	if !strings.Contains(string(unit), "ExecStart=/opt/m/bin/mirrorfs ") {
		t.Errorf("the unit does not start the installed binary:\n%s", unit)
	}
	if out, err := exec.Command(filepath.Join(dest, "opt/m/bin/mirrorfs"), "--version").Output(); err != nil || !strings.HasPrefix(string(out), "mirrorfs ") {
		t.Errorf("the installed binary: %v, %q", err, out)
	}
	if out, err := mk("uninstall"); err != nil {
		t.Fatalf("make uninstall: %v: %s", err, out)
	}
	for _, f := range want {
		if exists(filepath.Join(dest, f)) {
			t.Errorf("make uninstall left %s", f)
		}
	}
	evenLater := later.Add(time.Hour)
	os.Chtimes(filepath.Join(tree, "main.go"), evenLater, evenLater)
	if out, err := mk("-n", "install"); err != nil || !strings.Contains(out, "false build") {
		t.Errorf("make install with a source newer than the binary does not build: %v: %s", err, out)
	}
}
