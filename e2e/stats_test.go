package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"mirrorfs/daemon"
)

// runArgs runs mirrorfs-ctl with args, in c's settings and runtime folders.
func (c *ctl) runArgs(args ...string) result {
	c.e.t.Helper()
	cmd := exec.Command("sh", append([]string{"../scripts/mirrorfs-ctl"}, args...)...)
	cmd.Env = append(os.Environ(), "MIRRORFS="+bin, "MIRRORFS_CONF_DIR="+c.conf, "MIRRORFS_DEFAULTS=/nonexistent",
		"MIRRORFS_RUN_DIR="+filepath.Join(c.e.dir, "run"), "MIRRORFS_LOG_DIR="+filepath.Join(c.e.dir, "log"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	r := result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
	c.e.t.Logf("mirrorfs-ctl %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	return r
}

// TestCtlListAndStats: list shows every running mirror with its fields;
// stats shows its requests, errors by errno, open and passthrough files,
// as they change; neither shows a mirror that is not running.
func TestCtlListAndStats(t *testing.T) {
	for _, mode := range []struct{ name, options, passthrough string }{
		{"passthrough", "", "on"},
		{"nopassthrough", "OPTIONS=\"-o nopassthrough\"\n", "off"},
	} {
		t.Run(mode.name, func(t *testing.T) { testListAndStats(t, mode.options, mode.passthrough) })
	}
}

func testListAndStats(t *testing.T, options, passthrough string) {
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.src, "f"), bytes.Repeat([]byte("x"), 8192), 0o644)
	c := newCtl(e, options)
	if r := c.runArgs("list"); r.code != 0 || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("list with nothing running: exit %d, %q; want 0 and the header alone", r.code, r.stdout)
	}
	c.want("start", 0, "mirrorfs: mounted")
	pid := e.pid()

	r := c.runArgs("list")
	want := fmt.Sprintf("t\t%s\t%s\t%d\t%s", e.src, e.mnt, pid, passthrough)
	if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.HasSuffix(r.stdout, "\tyes\n") {
		t.Errorf("list: exit %d, %q; want 0 and a line starting %q, answering yes", r.code, r.stdout, want)
	}

	f, err := os.Open(filepath.Join(e.mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.ReadAt(make([]byte, 4096), 0)
	for i := range 3 {
		os.Stat(filepath.Join(e.mnt, fmt.Sprintf("missing%d", i)))
	}
	pt := "0"
	if passthrough == "on" {
		pt = "1"
	}
	stats := func(cond func(string) bool) {
		eventually(t, "stats", func() bool { return cond(c.runArgs("stats", "t").stdout) })
	}
	stats(func(out string) bool {
		return strings.Contains(out, "open files:   1 (passthrough: "+pt+")") &&
			opLine(out, "LOOKUP") != nil && opLine(out, "OPEN") != nil &&
			strings.Contains(out, "LOOKUP           ENOENT       3")
	})
	if l := opLine(c.runArgs("stats", "t").stdout, "LOOKUP"); len(l) < 5 || l[2] != "3" {
		t.Errorf("LOOKUP line %q: want 3 errors", l)
	}
	if fi, err := os.Stat(daemon.StatsPath(e.pidf)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("statistics file: %v, %v; want mode 0600", fi, err)
	}
	f.Close()
	stats(func(out string) bool { return strings.Contains(out, "open files:   0 (passthrough: 0)") })

	c.want("stop", 0, "is free")
	if exists(daemon.StatsPath(e.pidf)) {
		t.Error("the statistics file outlived the daemon")
	}
	if r := c.runArgs("list"); strings.Contains(r.stdout, e.mnt) {
		t.Errorf("list shows a stopped mirror: %q", r.stdout)
	}
	if r := c.runArgs("stats", "t"); r.code != 3 {
		t.Errorf("stats of a stopped mirror: exit %d, want 3", r.code)
	}
}

// opLine is the fields of op's line in stats's table, nil when none.
func opLine(out, op string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 5 && f[0] == op {
			return f
		}
	}
	return nil
}
