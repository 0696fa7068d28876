package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mirrorfs/e2e/workload"
	"mirrorfs/fs"
	"mirrorfs/mounts"
)

// TestTortureTakeover takes over TAKEOVER_ROUNDS times (make torture: 200) under
// the workload, alternating two different binaries, with a fault after
// every third takeover, in turn:
//   - kill -9 of the new daemon at a random moment before it is ready:
//     before the switch the old one serves on untouched; after it the
//     mount is dead and a plain start recovers it. Nothing else may happen.
//   - kill -9 of the old daemon while it drains: a file held open through
//     it fails with ENOTCONN, the new mount is untouched.
//   - a broken policy file: refused (exit 1), the old one serves on.
//
// The clients may fail only in the windows those faults open, and only
// as a dead mount fails; the held file's last writes must be on SOURCE.
func TestTortureTakeover(t *testing.T) {
	tt := &takeoverTorture{t: t, e: newEnv(t), seed: time.Now().UnixNano(), bins: []string{bin, secondBinary(t)}}
	tt.rnd = rand.New(rand.NewSource(tt.seed))
	rounds := max(tortureRounds(), 9) // each fault at least once
	if n, err := strconv.Atoi(os.Getenv("MIRRORFS_TAKEOVER_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	e := tt.e
	e.start()
	load, err := workload.Start(workload.Config{Mnt: e.mnt, WorkDir: t.TempDir(), Pause: time.Millisecond, Reopen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(load.Kill)
	began := time.Now()
	faults := []func(){tt.killNew, tt.killOld, tt.brokenPolicy}
	for i := 0; i < rounds; i++ {
		tt.takeover(tt.bins[i%2])
		if i%3 == 2 {
			faults[(i/3)%len(faults)]()
		}
		tt.checkOneMount(fmt.Sprintf("takeover %d", i))
		if t.Failed() {
			break
		}
	}
	r, err := load.Stop(waitLimit)
	if err != nil {
		t.Error(err)
	}
	tt.checkLoad(r)
	tt.end()
	t.Logf("torture: takeover (seed %d): %d takeovers alternating %s and %s in %v; ready after p50 %v p99 %v max %v",
		tt.seed, len(tt.ready), filepath.Base(tt.bins[0]), filepath.Base(tt.bins[1]), time.Since(began).Round(time.Second),
		percentile(tt.ready, 50), percentile(tt.ready, 99), percentile(tt.ready, 100))
	t.Logf("torture: kill -9 of the new daemon before ready: %d before the switch (old served on), %d after (dead mount, a plain start recovered it; %d starts found the old daemon still holding the lock, tried again), %d missed (ready first)",
		tt.killedBefore, tt.killedAfter, tt.startRaced, tt.missed)
	t.Logf("torture: kill -9 of a draining daemon: %d (its held file ENOTCONN, the new mount untouched; %d stale draining records left); broken policy: %d refused, old served on",
		tt.killedOld, tt.stale, tt.refused)
	t.Logf("torture: workload: %s; %d failures inside the fault windows; at most %d dead mounts beneath the serving one", r.Summary(), r.FailedTotal(), tt.beneath)
}

// secondBinary is a build of the daemon that differs from bin: with
// -race under make torture (MIRRORFS_TORTURE_ROUNDS set), else by its
// version only (quicker to build, for make test).
func secondBinary(t *testing.T) string {
	secondOnce.Do(func() {
		secondBin = filepath.Join(filepath.Dir(bin), "mirrorfs-second")
		args := []string{"build", "-ldflags", "-X mirrorfs/daemon.Version=0.0.0-second", "-o", secondBin}
		if os.Getenv("MIRRORFS_TORTURE_ROUNDS") != "" && os.Getenv("MIRRORFS_RACE") == "" {
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, "..")...)
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := build.CombinedOutput(); err != nil {
			secondErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if secondErr != nil {
		t.Fatalf("building the second binary: %v", secondErr)
	}
	return secondBin
}

var (
	secondOnce sync.Once
	secondBin  string
	secondErr  error
)

type takeoverTorture struct {
	t    *testing.T
	e    *env
	seed int64
	rnd  *rand.Rand
	bins []string

	ready   []time.Duration // --takeover to ready, each takeover
	windows []workload.Window
	killed  []int // daemons this test killed (exit 137 is theirs)
	served  []int // every daemon that served, in order

	killedBefore, killedAfter, missed, killedOld, refused int
	stale                                                 int // draining records left by killed daemons
	victims                                               []int
	beneath                                               int // the most dead mounts seen beneath the serving one
	startRaced                                            int // plain starts that found the old daemon not yet gone
}

// liveDraining are the draining records whose daemon lives (holds their
// flock).
func liveDraining(e *env) map[int]string {
	live := map[int]string{}
	for pid, name := range draining(e) {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			live[pid] = name
		}
		f.Close()
	}
	return live
}

// commandLimit bounds a start or takeover the torture runs: its own
// bounds (the first word, --ready-timeout, the stop's grace) come first,
// and a killed daemon's exit waits for the kernel's teardown of what it
// held (a fanotify group waits for a grace period: most of a minute on
// an overloaded machine).
const commandLimit = 3 * time.Minute

// args are e's arguments with extra, and a --ready-timeout that outlasts
// the stalls of an overloaded machine: a killed daemon's mount is torn
// down, and new processes wait for a CPU, for seconds there. What the
// torture checks is what a start does, not how fast.
func (tt *takeoverTorture) args(extra ...string) []string {
	return tt.e.args(append(extra, "--ready-timeout", "2m")...)
}

// run runs binary with e's pidfile and log and extra, within commandLimit.
func (tt *takeoverTorture) run(binary string, extra ...string) result {
	tt.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, tt.args(extra...)...)
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = tt.e.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		tt.t.Fatalf("running %s: %v", binary, err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// takeover takes over with binary and checks the new daemon serves.
func (tt *takeoverTorture) takeover(binary string) {
	t, e := tt.t, tt.e
	t.Helper()
	old, oldID := e.pid(), topID(e)
	began := time.Now()
	r := tt.run(binary, "--takeover")
	took := time.Since(began)
	pid := e.pid()
	if r.code != 0 || pid == old || topID(e) == oldID {
		t.Fatalf("takeover from %d with %s: exit %d (%q), pidfile %d, mount id %d (was %d)", old, binary, r.code, r.stderr, pid, topID(e), oldID)
	}
	tt.ready = append(tt.ready, took)
	tt.newDaemon(pid)
}

func (tt *takeoverTorture) newDaemon(pid int) {
	tt.e.pids = append(tt.e.pids, pid)
	tt.served = append(tt.served, pid)
}

// killNew starts a takeover and kills its new daemon with SIGKILL at a
// random moment up to about the time a takeover takes.
func (tt *takeoverTorture) killNew() {
	t, e := tt.t, tt.e
	t.Helper()
	old, oldID := e.pid(), topID(e)
	binary := tt.bins[tt.rnd.Intn(2)]
	before := append(procsOf(binary, e.dir, "--takeover"), tt.served...) // daemons, not victims
	cmd := exec.Command(binary, tt.args("--takeover")...)
	cmd.Dir, cmd.WaitDelay = e.dir, 10*time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	moment := time.Duration(tt.rnd.Int63n(int64(percentile(tt.ready, 50)*5/4) + 1))
	time.Sleep(moment) // the random moment of the fault, not a synchronisation
	struck := time.Now()
	victims := tt.killTakeover(binary, append(before, cmd.Process.Pid), done)
	select {
	case <-done:
	case <-time.After(commandLimit):
		cmd.Process.Kill()
		t.Fatalf("the takeover whose daemon was killed did not end within %v", commandLimit)
	}
	for _, pid := range victims {
		e.killWithin(pid, waitLimit)
	}
	tt.victims = victims
	tt.afterKillNew(binary, old, oldID, struck, cmd.ProcessState.Success(), stderr.String())
}

// killTakeover kills every process of the takeover but its first (which
// only waits for the daemon's word) and those of spare (the daemons there
// before it), as soon as there is one, unless the takeover ends first; it
// returns the pids it killed.
func (tt *takeoverTorture) killTakeover(binary string, spare []int, done <-chan struct{}) []int {
	for {
		select {
		case <-done:
			return nil
		default:
		}
		var victims []int
		for _, pid := range procsOf(binary, tt.e.dir, "--takeover") {
			if !slices.Contains(spare, pid) && syscall.Kill(pid, syscall.SIGKILL) == nil {
				victims = append(victims, pid)
			}
		}
		if len(victims) > 0 {
			tt.killed = append(tt.killed, victims...)
			return victims
		}
		time.Sleep(time.Millisecond)
	}
}

// afterKillNew checks the two states a takeover killed before ready may
// leave: the old daemon serving on untouched, or a dead mount, which a
// plain start then recovers. (A takeover that was ready before the kill
// struck is a takeover like the others.)
func (tt *takeoverTorture) afterKillNew(binary string, old, oldID int, struck time.Time, ok bool, stderr string) {
	t, e := tt.t, tt.e
	t.Helper()
	switch pid := e.pid(); {
	case ok && pid != old && syscall.Kill(pid, 0) == nil && answers(e.mnt) == nil:
		tt.missed++
		tt.newDaemon(pid)
		return
	case !ok && pid == old && topID(e) == oldID && syscall.Kill(old, 0) == nil && answers(e.mnt) == nil:
		tt.killedBefore++
		if !strings.HasPrefix(stderr, "mirrorfs: ") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("a takeover whose daemon was killed said %q, want one line \"mirrorfs: ...\"", stderr)
		}
		return
	}
	err := answers(e.mnt)
	if !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9 of a new daemon (old %d; killed %v, at %s): neither the old serving (pidfile %d, mount id %d, was %d) nor a dead mount (%v); takeover said %q; mounts %+v; daemons %v %v",
			old, tt.victims, struck.Format("15:04:05.000000"), e.pid(), topID(e), oldID, err, stderr, fuseMountsAt(e.mnt),
			procsOf(tt.bins[0], e.dir, "--takeover"), procsOf(tt.bins[1], e.dir, "--takeover"))
	}
	// The old daemon detaches its mount before it lets go of the lock: a
	// start in between finds it still running, and is tried again.
	r := tt.run(binary)
	deadline := time.Now().Add(waitLimit)
	for r.code == 3 && time.Now().Before(deadline) {
		tt.startRaced++
		time.Sleep(10 * time.Millisecond)
		r = tt.run(binary)
	}
	if r.code != 0 || answers(e.mnt) != nil {
		t.Fatalf("a plain start after a dead takeover: exit %d %q, mount answers: %v", r.code, r.stderr, answers(e.mnt))
	}
	tt.newDaemon(e.pid())
	tt.killedAfter++
	tt.windows = append(tt.windows, workload.Window{From: struck, To: time.Now().Add(time.Second)})
}

// answers reads the mountpoint's listing: nil when served, ENOTCONN dead.
func answers(mnt string) error {
	_, err := os.ReadDir(mnt)
	return err
}

// killOld holds a file open through the serving daemon, takes over, and
// kills the old daemon with SIGKILL while it drains.
func (tt *takeoverTorture) killOld() {
	t, e := tt.t, tt.e
	t.Helper()
	f, err := os.Create(filepath.Join(e.mnt, "drain-held"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := e.pid()
	tt.takeover(tt.bins[tt.rnd.Intn(2)])
	pid, id := e.pid(), topID(e)
	eventually(t, "the old daemon draining", func() bool { return draining(e)[old] != "" })
	struck := time.Now()
	syscall.Kill(old, syscall.SIGKILL)
	tt.killed = append(tt.killed, old)
	e.killWithin(old, waitLimit)
	tt.windows = append(tt.windows, workload.Window{From: struck, To: time.Now().Add(time.Second)})
	if err := f.Sync(); !errors.Is(err, syscall.ENOTCONN) { // (with passthrough, writes may go on)
		t.Errorf("fsync of a file held through a draining daemon killed: %v, want ENOTCONN", err)
	}
	if e.pid() != pid || topID(e) != id || answers(e.mnt) != nil {
		t.Errorf("the new mount was touched by kill -9 of the draining one: pidfile %d (want %d), mount id %d (want %d), %v", e.pid(), pid, topID(e), id, answers(e.mnt))
	}
	tt.killedOld++
}

// brokenPolicy takes over with a policy file the daemon refuses.
func (tt *takeoverTorture) brokenPolicy() {
	t, e := tt.t, tt.e
	t.Helper()
	old, id := e.pid(), topID(e)
	bad := e.writePolicy("read_only = true\nfrobnicate = 1\n")
	r := tt.run(tt.bins[tt.rnd.Intn(2)], "--takeover", "--config", bad)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "mirrorfs: ") || !strings.Contains(r.stderr, "frobnicate") {
		t.Errorf("takeover with a broken policy: exit %d, %q", r.code, r.stderr)
	}
	if e.pid() != old || topID(e) != id || answers(e.mnt) != nil {
		t.Errorf("after a refused takeover: pidfile %d (want %d), mount id %d (want %d), %v", e.pid(), old, topID(e), id, answers(e.mnt))
	}
	tt.refused++
}

// checkOneMount checks the pidfile names a live daemon whose mount is on
// top and answers; a takeover killed after it slid its mount beneath
// leaves that mount dead below until the serving daemon stops, which is
// counted (the final stop must leave nothing mounted).
func (tt *takeoverTorture) checkOneMount(when string) {
	t, e := tt.t, tt.e
	t.Helper()
	if pid := e.pid(); pid <= 0 || syscall.Kill(pid, 0) != nil {
		t.Errorf("%s: the pidfile names %d, not a live daemon", when, pid)
	}
	if err := answers(e.mnt); err != nil {
		t.Errorf("%s: the mount does not answer: %v", when, err)
	}
	tt.beneath = max(tt.beneath, len(fuseMountsAt(e.mnt))-1)
}

// fuseMountsAt lists the mounts of mirrorfs at path, top last.
func fuseMountsAt(path string) []mounts.Mount {
	table, _ := mounts.Read()
	var at []mounts.Mount
	for _, m := range table {
		if m.Mountpoint == path && m.FSType == fs.FSType {
			at = append(at, m)
		}
	}
	return at
}

// checkLoad allows failures only inside the fault windows, and there only
// as a dead mount or an empty mountpoint fails (or the lock probe winning
// the lock while the holder reopens its file). EIO is one of those: an
// open whose answer the kernel was taking in (a passthrough backing file
// among it) when the daemon died fails with it.
func (tt *takeoverTorture) checkLoad(r workload.Report) {
	t, e := tt.t, tt.e
	t.Helper()
	if out := r.FailuresOutside(tt.windows); len(out) > 0 {
		t.Errorf("%d failed calls outside the fault windows; the first: %v", len(out), out[:min(5, len(out))])
	}
	allowed := []string{"ENOTCONN", "ECONNABORTED", "EIO", "ENOENT", "GRANTED"}
	for k, n := range r.Failed() {
		if _, errno, _ := strings.Cut(k, " "); !slices.Contains(allowed, errno) && !slices.Contains(workload.Expected, k) {
			t.Errorf("%d calls failed with %s, not a way a dead mount fails", n, k)
		}
	}
	h, _ := r.Role("holder")
	b, err := os.ReadFile(workload.HeldPath(e.src))
	written, mapped, herr := workload.HeldCounter(b)
	if err != nil || herr != nil || written != h.Counter || mapped != h.Counter {
		t.Errorf("held file on SOURCE: %d by write(2), %d by the map (%v %v), want %d both", written, mapped, err, herr, h.Counter)
	}
}

// end checks every daemon but the last ended (0, or 137 for those killed),
// no draining file is left, and the last one stops cleanly.
func (tt *takeoverTorture) end() {
	t, e := tt.t, tt.e
	t.Helper()
	last := e.pid()
	for _, pid := range tt.served {
		if pid == last || slices.Contains(tt.killed, pid) {
			continue
		}
		if code := waitExit(t, pid); code != 0 {
			t.Errorf("daemon %d exited with %d, want 0 once drained", pid, code)
		}
	}
	// A daemon killed with SIGKILL cannot remove its record; its flock is
	// gone with it, which is how a live one is told from a stale one.
	eventually(t, "no draining daemon left", func() bool { return len(liveDraining(e)) == 0 })
	for pid := range draining(e) {
		if !slices.Contains(tt.killed, pid) {
			t.Errorf("a draining record of daemon %d, which was not killed, outlived it", pid)
		}
	}
	tt.stale = len(draining(e))
	e.stopWithin(last, 10*time.Second)
}

// procsOf lists the live processes running binary whose command line
// mentions dir and arg.
func procsOf(binary, dir, arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmdline), binary+"\x00") {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if strings.Contains(string(cmdline), dir) && strings.Contains(string(cmdline), "\x00"+arg+"\x00") && procState(string(stat)) != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// percentile is the p-th percentile of ds (nearest rank), 0 for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(time.Millisecond)
}
