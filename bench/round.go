package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sizes of the workloads.
type sizes struct {
	seq, cold, warm int64 // bytes
	files, tree     int   // entries
	randTime        string
}

// setup holds the scratch folders: an ext4 source and a tmpfs source.
type setup struct {
	work, ext4, tmpfs string
	size              sizes
	targets           []target
}

func newSetup(work string, quick bool) (*setup, error) {
	s := &setup{work: work, ext4: filepath.Join(work, "src-ext4"), tmpfs: filepath.Join(work, "src-tmpfs")}
	s.size = sizes{seq: 1 << 30, cold: 8 << 30, warm: 256 << 20, files: 10000, tree: 20000, randTime: "10s"}
	if quick {
		s.size = sizes{seq: 64 << 20, cold: 64 << 20, warm: 16 << 20, files: 500, tree: 1000, randTime: "1s"}
	}
	s.targets = targets(*mirrorfs, work)
	for _, d := range []string{s.ext4, s.tmpfs, filepath.Join(work, "run"), filepath.Join(work, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := unix.Mount("tmpfs", s.tmpfs, "tmpfs", 0, "size=1g"); err != nil {
		return nil, fmt.Errorf("tmpfs source: %w", err)
	}
	fmt.Fprintln(os.Stderr, "writing the data files")
	for name, size := range map[string]int64{"seq.dat": s.size.seq, "cold.dat": s.size.cold, "warm.dat": s.size.warm} {
		if err := fillFile(filepath.Join(s.ext4, name), size); err != nil {
			return nil, err
		}
	}
	return s, makeTree(filepath.Join(s.ext4, "tree"), s.size.tree)
}

func (s *setup) teardown() {
	for _, t := range s.targets {
		for _, kind := range []string{"ext4", "tmpfs"} {
			unix.Unmount(s.mnt(t, kind), unix.MNT_DETACH)
		}
	}
	unix.Unmount(s.tmpfs, unix.MNT_DETACH)
}

func (s *setup) targetNames() []string {
	var names []string
	for _, t := range s.targets {
		names = append(names, t.name)
	}
	return names
}

func (s *setup) mnt(t target, kind string) string {
	return filepath.Join(s.work, "mnt-"+kind+"-"+fmt.Sprint(len(t.name))+"-"+safe(t.name))
}

func safe(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c == ' ' {
			b[i] = '-'
		}
	}
	return string(b)
}

// mountAll starts every target on the source of kind, recording start
// times and the resident set right after mounting.
func (s *setup) mountAll(kind, src string, order []target, res *results) ([]mount, error) {
	var mounts []mount
	for _, t := range order {
		if t.start == nil {
			mounts = append(mounts, mount{t: t, dir: src})
			continue
		}
		mnt := s.mnt(t, kind)
		os.MkdirAll(mnt, 0o755)
		began := time.Now()
		pid, err := t.start(src, mnt, safe(t.name)+"-"+kind)
		if err != nil {
			res.fail(t.name, err) // the other targets still count
			continue
		}
		if kind == "ext4" {
			res.add("start to ready", "ms", true, t.name, ms(time.Since(began)))
			res.add("RSS after mount", "MiB", true, t.name, rssMiB(pid))
		}
		mounts = append(mounts, mount{t: t, dir: mnt, pid: pid})
	}
	return mounts, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rotate gives each round a different target order, so that no target
// always runs first (or last) after a cache drop.
func rotate(ts []target, r int) []target {
	r %= len(ts)
	return append(append([]target(nil), ts[r:]...), ts[:r]...)
}

// round runs every workload on every target once, interleaved.
func (s *setup) round(r int, res *results) error {
	order := rotate(s.targets, r)
	ext4, err := s.mountAll("ext4", s.ext4, order, res)
	if err != nil {
		return err
	}
	tmpfs, err := s.mountAll("tmpfs", s.tmpfs, order, res)
	if err != nil {
		return err
	}
	for _, w := range s.workloads() {
		if !strings.Contains(w.name, *only) {
			continue
		}
		mounts := ext4
		if w.tmpfs {
			mounts = tmpfs
		}
		for _, m := range mounts {
			if err := w.run(m, res); err != nil {
				res.fail(m.t.name, fmt.Errorf("%s: %w", w.name, err))
			}
		}
	}
	for _, m := range ext4 {
		if m.pid != 0 {
			res.add("RSS after the workloads", "MiB", true, m.t.name, rssMiB(m.pid))
		}
		took, err := m.stop()
		if err != nil {
			res.fail(m.t.name, err)
			continue
		}
		if m.pid != 0 {
			res.add("SIGTERM to gone, idle", "ms", true, m.t.name, ms(took))
		}
	}
	for _, m := range tmpfs {
		if err := stopWithOpenFiles(m, res); err != nil {
			res.fail(m.t.name, err)
		}
	}
	return nil
}

// stopWithOpenFiles stops a target while 100 files are open through it.
func stopWithOpenFiles(m mount, res *results) error {
	if m.pid == 0 {
		return nil
	}
	var fds []int
	for i := 0; i < 100; i++ {
		fd, err := unix.Open(filepath.Join(m.dir, fmt.Sprintf("open%d", i)), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	took, err := m.stop()
	if err != nil {
		return err
	}
	res.add("SIGTERM to gone, 100 files open", "ms", true, m.t.name, ms(took))
	return nil
}
