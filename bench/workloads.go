package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type workload struct {
	name  string
	tmpfs bool // runs on the tmpfs source
	run   func(m mount, res *results) error
}

func (s *setup) workloads() []workload {
	z := s.size
	return []workload{
		{name: "sequential read", run: func(m mount, res *results) error {
			dropCaches()
			readAll(filepath.Join(s.ext4, "seq.dat")) // the source is cached; the mirror is measured
			r, err := fio(m.dir, "seq.dat", "--rw=read", "--bs=1M", fmt.Sprintf("--size=%d", z.seq))
			res.add("sequential read 1M blocks", "MB/s", false, m.t.name, r.Read.BW/1e6)
			return err
		}},
		{name: "sequential write", run: func(m mount, res *results) error {
			defer os.Remove(filepath.Join(m.dir, "write.dat"))
			r, err := fio(m.dir, "write.dat", "--rw=write", "--bs=1M", fmt.Sprintf("--size=%d", z.seq), "--end_fsync=1")
			res.add("sequential write 1M blocks + fsync", "MB/s", false, m.t.name, r.Write.BW/1e6)
			return err
		}},
		{name: "cold random read", run: func(m mount, res *results) error {
			dropCaches()
			r, err := fio(m.dir, "cold.dat", "--rw=randread", "--bs=4k", fmt.Sprintf("--size=%d", z.cold),
				"--time_based", "--runtime="+z.randTime)
			res.add("random read 4K, cold", "IOPS", false, m.t.name, r.Read.IOPS)
			return err
		}},
		{name: "warm random read", run: func(m mount, res *results) error {
			readAll(filepath.Join(m.dir, "warm.dat"))
			r, err := fio(m.dir, "warm.dat", "--rw=randread", "--bs=4k", fmt.Sprintf("--size=%d", z.warm),
				"--time_based", "--runtime="+z.randTime)
			res.add("random read 4K, warm: latency", "µs", true, m.t.name, r.Read.Clat.Mean/1e3)
			return err
		}},
		{name: "metadata ext4", run: func(m mount, res *results) error {
			return metadata(m, res, "metadata, ext4 source", z.files, 1)
		}},
		{name: "metadata tmpfs", tmpfs: true, run: func(m mount, res *results) error {
			return metadata(m, res, "metadata, tmpfs source", z.files, 1)
		}},
		{name: "metadata tmpfs, 2 clients", tmpfs: true, run: func(m mount, res *results) error {
			return metadata(m, res, "metadata, tmpfs source, 2 clients", z.files, 2)
		}},
		{name: "metadata tmpfs, another user", tmpfs: true, run: func(m mount, res *results) error {
			return metadataAsUser(m, res, "metadata, tmpfs source, as a user not root", z.files)
		}},
		{name: "source change", tmpfs: true, run: func(m mount, res *results) error {
			return sourceChange(m, res, filepath.Join(s.tmpfs, "change.dat"), *changes)
		}},
		{name: "find + stat", run: func(m mount, res *results) error {
			dropCaches()
			dir := filepath.Join(m.dir, "tree")
			res.add("find + stat, cold", "entries/s", false, m.t.name, walk(dir))
			res.add("find + stat, cached", "entries/s", false, m.t.name, walk(dir))
			return nil
		}},
	}
}

// sourceChange times how long a change made directly on SOURCE takes to
// show through the target, n times: a new size and new bytes written to the
// source file while the target has the old ones cached, then a stat and a
// read through the target until both show the new. The plain folder is its
// own source: nothing to measure, its column stays empty.
func sourceChange(m mount, res *results, src string, n int) error {
	if m.pid == 0 {
		return nil
	}
	through := filepath.Join(m.dir, filepath.Base(src))
	var took []float64
	for i := 0; i <= n; i++ {
		data := bytes.Repeat([]byte{byte('a' + i%26)}, 100+50*(i%2))
		if err := os.WriteFile(src, data, 0o644); err != nil {
			return err
		}
		began := time.Now()
		if err := showsWithin(through, data, 10*time.Second); err != nil {
			return err
		}
		if i > 0 { // the first makes the name known; then it is cached
			took = append(took, ms(time.Since(began)))
		}
	}
	const row = "source change → visible through the mirror"
	res.add(row+", p50", "ms", true, m.t.name, percentile(took, 0.50))
	res.add(row+", p99", "ms", true, m.t.name, percentile(took, 0.99))
	return nil
}

// showsWithin polls path until a stat gives the size of data and a read
// gives data. Neither asks for the atime: a read marks it stale, and a stat
// asking for it (os.Stat, os.ReadFile's fstat) makes the kernel fetch every
// attribute afresh, a coherence of the probe's own making.
func showsWithin(path string, data []byte, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var st unix.Statx_t
		if unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_SIZE, &st) == nil && st.Size == uint64(len(data)) {
			if b, err := readNoStat(path, len(data)+1); err == nil && bytes.Equal(b, data) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: a change on the source not seen after %v", path, limit)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// readNoStat reads up to limit bytes of path through a new descriptor.
func readNoStat(path string, limit int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, limit)
	n, err := unix.Read(fd, b)
	return b[:max(n, 0)], err
}

// percentile is the nearest-rank p-quantile of vs.
func percentile(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(p*float64(len(s))))-1)]
}

type fioResult struct {
	Read, Write struct {
		BW   float64 `json:"bw_bytes"`
		IOPS float64 `json:"iops"`
		Clat struct {
			Mean float64 `json:"mean"`
		} `json:"clat_ns"`
	}
}

func fio(dir, file string, args ...string) (fioResult, error) {
	args = append([]string{"--name=bench", "--filename=" + filepath.Join(dir, file), "--ioengine=psync",
		"--output-format=json", "--invalidate=0"}, args...)
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		return fioResult{}, fmt.Errorf("fio %v: %w", args, err)
	}
	var parsed struct{ Jobs []fioResult }
	if err := json.Unmarshal(out, &parsed); err != nil || len(parsed.Jobs) == 0 {
		return fioResult{}, fmt.Errorf("fio output: %v", err)
	}
	return parsed.Jobs[0], nil
}

// metadata creates (and writes 64 bytes to), stats, lists and removes n
// files per client, and records files per second for the whole cycle.
func metadata(m mount, res *results, name string, n, clients int) error {
	var wg sync.WaitGroup
	errs := make([]error, clients)
	began := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[c] = metadataCycle(filepath.Join(m.dir, fmt.Sprintf("meta%d", c)), n)
		}()
	}
	wg.Wait()
	res.add(name, "files/s", false, m.t.name, float64(n*clients)/time.Since(began).Seconds())
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// nobody is the user of the "another user" workload.
const nobody = 65534

// cycleEnv names the folder a copy of this program, run as another user,
// runs one metadata cycle in (runCycleIfAsked).
const cycleEnv = "MIRRORFS_BENCH_CYCLE"

// metadataAsUser times a metadata cycle of n files run by a user who is not
// root: through mirrorfs, each of her requests is carried out with her
// credentials (a switch of the serving thread), where root's are not.
func metadataAsUser(m mount, res *results, name string, n int) error {
	dir := filepath.Join(m.dir, "user")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chown(dir, nobody, nobody); err != nil {
		return err
	}
	cmd := exec.Command(selfCopy, "-files", fmt.Sprint(n))
	cmd.Env = append(os.Environ(), cycleEnv+"="+filepath.Join(dir, "meta"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("as uid %d: %v: %s", nobody, err, out)
	}
	res.add(name, "files/s", false, m.t.name, float64(n)/time.Since(began).Seconds())
	return nil
}

// runCycleIfAsked runs the metadata cycle asked for by metadataAsUser, in
// this process (run as that user), and exits.
func runCycleIfAsked() {
	dir := os.Getenv(cycleEnv)
	if dir == "" {
		return
	}
	if err := metadataCycle(dir, *files); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func metadataCycle(dir string, n int) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	payload := make([]byte, 64)
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), payload, 0o644); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprint(i))); err != nil {
			return err
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != n {
		return fmt.Errorf("readdir: %d entries, %v", len(ents), err)
	}
	for i := 0; i < n; i++ {
		if err := os.Remove(filepath.Join(dir, fmt.Sprint(i))); err != nil {
			return err
		}
	}
	return nil
}

// walk lstats every entry below dir and returns entries per second.
func walk(dir string) float64 {
	began, n := time.Now(), 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil {
			_, err = d.Info()
			n++
		}
		return err
	})
	return float64(n) / time.Since(began).Seconds()
}

func readAll(path string) {
	if f, err := os.Open(path); err == nil {
		io.Copy(io.Discard, f)
		f.Close()
	}
}

// fillFile writes size bytes of pseudo-random data, once.
func fillFile(path string, size int64) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8)
	}
	for written := int64(0); written < size; written += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-written)]); err != nil {
			return err
		}
	}
	return f.Sync()
}

// makeTree makes n entries: folders of 100 small files.
func makeTree(dir string, n int) error {
	if _, err := os.Stat(filepath.Join(dir, ".done")); err == nil {
		return nil
	}
	os.RemoveAll(dir)
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprint(i)), []byte("x"), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, ".done"), nil, 0o644)
}
