// Command bench measures mirrorfs side by side with the plain directory and
// with bindfs (and mergerfs, when installed): the same workloads, interleaved
// across targets, several rounds; it reports medians with min-max and ratios.
// It needs root, fio and bindfs (make bench installs them).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	clients "mirrorfs/e2e/workload"
)

var (
	rounds   = flag.Int("rounds", 3, "rounds of every workload on every target")
	quick    = flag.Bool("quick", false, "small sizes and short runs, to check the harness")
	out      = flag.String("out", "bench/results/last.md", "where to write the table")
	mirrorfs = flag.String("mirrorfs", "./mirrorfs", "the mirrorfs binary")
	work     = flag.String("dir", "/var/tmp/mirrorfs-bench", "scratch folder on a disk file system")
	only     = flag.String("only", "", "run only the workloads whose name contains this")
	changes  = flag.Int("changes", 30, "source changes timed per target and round")
	files    = flag.Int("files", 0, "with "+cycleEnv+" set: files in the metadata cycle to run")
	takeovs  = flag.Int("takeovers", 0, "takeovers in the takeover part (0: 50 per 3 rounds); -only takeover runs that part alone")
)

func main() {
	clients.RunIfAsked() // a copy of this program as a client of the takeover part
	flag.Parse()
	runCycleIfAsked() // a copy of this program as another user
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it mounts, and drops the page cache for cold runs)")
	}
	if *only == "takeover" {
		return takeoverAlone()
	}
	for _, tool := range []string{"fio", "bindfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (make bench installs it)", tool)
		}
	}
	s, err := newSetup(*work, *quick)
	if err != nil {
		return err
	}
	if selfCopy, err = copySelf(*work); err != nil {
		return err
	}
	defer s.teardown()
	res := newResults()
	for r := 0; r < *rounds; r++ {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", r+1, *rounds)
		if err := s.round(r, res); err != nil {
			return err
		}
	}
	table := res.markdown(s.targetNames(), machine())
	if *only == "" {
		part, err := benchTakeover(takeoverRounds())
		if err != nil {
			return err
		}
		table += part
	}
	fmt.Print(table)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(*out, []byte(table), 0o644)
}

// takeoverRounds is how many takeovers the takeover part makes.
func takeoverRounds() int {
	if *takeovs > 0 {
		return *takeovs
	}
	return max(5, 50**rounds/3)
}

// takeoverAlone runs the takeover part alone; its table goes beside the
// full run's, in takeover.md.
func takeoverAlone() error {
	table, err := benchTakeover(takeoverRounds())
	if err != nil {
		return err
	}
	fmt.Print(table)
	path := filepath.Join(filepath.Dir(*out), "takeover.md")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(table), 0o644)
}

// selfCopy is a copy of this program that any user may run (go run builds
// it in a private folder).
var selfCopy string

func copySelf(work string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(work, "bench")
	os.Remove(dst)
	return dst, os.WriteFile(dst, b, 0o755)
}

// machine describes where the numbers come from.
func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d cores, Linux %s, %s", time.Now().UTC().Format("2006-01-02"),
		runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version())
}
