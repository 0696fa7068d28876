package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mountFlags are the per-mount options (rw, nosuid, nodev, ...) of the
// topmost mount at mnt, from /proc/self/mountinfo.
func mountFlags(t *testing.T, mnt string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var flags []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == mnt {
			flags = strings.Split(f[5], ",")
		}
	}
	return flags
}

// TestMountHelperSecurityFlags: a mirror mounted through mount.fuse3 (fstab,
// mount -t fuse.mirrorfs) gets nosuid and nodev as a direct start does,
// unless suid or dev is asked for.
func TestMountHelperSecurityFlags(t *testing.T) {
	helper, err := exec.LookPath("mount.fuse3")
	if err != nil {
		t.Fatalf("mount.fuse3 (fuse3) is needed: %v", err)
	}
	for _, c := range []struct {
		opts      string
		want, not []string
	}{
		{"", []string{"nosuid", "nodev"}, nil},
		{"suid,dev", nil, []string{"nosuid", "nodev"}},
		{"suid", []string{"nodev"}, []string{"nosuid"}},
	} {
		t.Run(strings.ReplaceAll("o="+c.opts, ",", "+"), func(t *testing.T) {
			e := newEnv(t)
			opts := "pidfile=" + e.pidf + ",log=" + e.logf
			if c.opts != "" {
				opts = c.opts + "," + opts
			}
			cmd := exec.Command(helper, e.src, e.mnt, "-t", "mirrorfs", "-o", opts)
			cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mount.fuse3: %v: %s", err, out)
			}
			pid := e.pid()
			e.pids = append(e.pids, pid)
			flags := mountFlags(t, e.mnt)
			for _, f := range c.want {
				if !slices.Contains(flags, f) {
					t.Errorf("-o %q: mount flags %v lack %s", c.opts, flags, f)
				}
			}
			for _, f := range c.not {
				if slices.Contains(flags, f) {
					t.Errorf("-o %q: mount flags %v have %s", c.opts, flags, f)
				}
			}
			if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
				t.Fatalf("umount: %v: %s", err, out)
			}
			e.stopped(pid)
		})
	}
	t.Run("direct", func(t *testing.T) {
		e := newEnv(t)
		e.start()
		if flags := mountFlags(t, e.mnt); !slices.Contains(flags, "nosuid") || !slices.Contains(flags, "nodev") {
			t.Errorf("direct start: mount flags %v", flags)
		}
		e.stopWithin(e.pid(), waitLimit)
	})
}
