package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The security tests play a hostile local user: an unprivileged account
// made for the test run, who runs shell commands and probes (small Go
// functions of this test binary, run in a process of her own) against a
// mirror that root serves with allow_other.

// advName is the account of the hostile user.
const advName = "mirrorfs-adv"

var (
	advOnce     sync.Once
	advUID      int
	advGID      int
	advErr      error
	probeBin    string // a copy of this test binary that the adversary may run
	probeBinErr error
)

// adversary returns the hostile user's uid and gid, creating the account
// (no home, no login shell) the first time.
func adversary(t *testing.T) (uid, gid int) {
	t.Helper()
	requireFUSE(t)
	advOnce.Do(func() {
		if _, err := user.Lookup(advName); err != nil {
			out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", advName).CombinedOutput()
			if err != nil {
				advErr = fmt.Errorf("useradd %s: %v: %s", advName, err, out)
				return
			}
		}
		u, err := user.Lookup(advName)
		if err != nil {
			advErr = err
			return
		}
		advUID, _ = strconv.Atoi(u.Uid)
		advGID, _ = strconv.Atoi(u.Gid)
		probeBin, probeBinErr = copyTestBinary()
	})
	if advErr != nil {
		t.Fatalf("the hostile user: %v", advErr)
	}
	return advUID, advGID
}

// copyTestBinary puts a copy of this test binary where every user may run
// it (go test builds it in a private folder).
func copyTestBinary() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	in, err := os.Open(self)
	if err != nil {
		return "", err
	}
	defer in.Close()
	dst := filepath.Join(filepath.Dir(bin), "e2e.test")
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

// asAdversary runs a command as the hostile user, within a deadline, and
// returns its combined output.
func asAdversary(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	uid, gid := adversary(t)
	return runAs(uid, gid, name, args...)
}

func runAs(uid, gid int, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s %v: no end within %v", name, args, waitLimit)
	}
	return string(out), err
}

// probes are the Go functions a test may run as the hostile user (see
// runProbe). Each prints what it found and returns an error if it failed.
var probes = map[string]func(args []string) error{}

// probeEnv names the probe the test binary runs instead of the tests.
const probeEnv = "MIRRORFS_E2E_PROBE"

// runProbeIfAsked runs the probe named in the environment, if any, and
// exits: it is how the test binary serves as the hostile user's tool.
func runProbeIfAsked() {
	name := os.Getenv(probeEnv)
	if name == "" {
		return
	}
	p, ok := probes[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no probe %q\n", name)
		os.Exit(2)
	}
	if err := p(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// probeAsAdversary runs the probe name with args as the hostile user.
func probeAsAdversary(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	uid, gid := adversary(t)
	if probeBinErr != nil {
		t.Fatalf("copying the test binary for probes: %v", probeBinErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, probeBin, args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), probeEnv+"="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("probe %s %v: no end within %v; output:\n%s", name, args, waitLimit, out)
	}
	return string(out), err
}

// loopFS makes a small file system of type fstype (mkfs.fstype with
// mkfsArgs) on a loop device and mounts it (mount -o opts; "" for none);
// it is unmounted in cleanup. A missing mkfs skips the test, and fails it
// under CI, whose setup installs it.
func loopFS(t *testing.T, fstype, opts string, mkfsArgs ...string) string {
	t.Helper()
	mkfs := "mkfs." + fstype
	if _, err := exec.LookPath(mkfs); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing, and CI must provide it", mkfs)
		}
		t.Skipf("%s is missing", mkfs)
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "fs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(320 << 20) // XFS needs 300 MiB; sparse
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, append(mkfsArgs, img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", mkfs, err, out)
	}
	args := []string{"-o", strings.Trim("loop,"+opts, ","), img, mnt}
	if fstype == "exfat" {
		args = append([]string{"-t", "exfat-fuse"}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v: %s", args, err, out)
	}
	t.Cleanup(func() { detachWithin(mnt) })
	return mnt
}

// detachWithin unmounts mnt lazily, retrying for a while: a mount of the
// mirror on top of it may still be on its way out.
func detachWithin(mnt string) {
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, ok := mountAt(mnt); !ok {
			return
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
}
