package workload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// payload is what churn iteration i writes: its number, then filler, so
// that a stale read shows as wrong data.
func payload(i int64) []byte {
	b := bytes.Repeat([]byte{byte(i)}, 4096)
	binary.LittleEndian.PutUint64(b, uint64(i))
	return b
}

// churn loops over open/write/fstat/close/read/rename/readdir/unlink in a
// folder of its own: none of them is expected to fail.
func (c *client) churn() error {
	dir := filepath.Join(c.Mnt, fmt.Sprintf("churn%d", c.ID))
	if err := unix.Mkdir(dir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	ready()
	for i := int64(0); !c.stop.Load(); i++ {
		c.churnOnce(dir, i)
		c.pause()
	}
	return nil
}

func (c *client) churnOnce(dir string, i int64) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	data := payload(i)
	if c.writeFile(a, data) != nil {
		return
	}
	if c.readFile(a, data) != nil {
		return
	}
	if c.call("rename", func() error { return unix.Rename(a, b) }) != nil {
		return
	}
	c.list(dir, "b", "a")
	c.call("unlink", func() error { return unix.Unlink(b) })
}

// writeFile creates name with data, checks its size with fstat, closes it.
func (c *client) writeFile(name string, data []byte) error {
	var fd int
	err := c.call("open", func() (err error) {
		fd, err = unix.Open(name, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		return err
	})
	if err != nil {
		return err
	}
	err = c.call("write", func() error {
		n, err := unix.Write(fd, data)
		if err == nil && n != len(data) {
			err = check(fmt.Sprintf("SHORT(%d)", n))
		}
		return err
	})
	if err == nil {
		err = c.call("fstat", func() error {
			var st unix.Stat_t
			err := unix.Fstat(fd, &st)
			if err == nil && st.Size != int64(len(data)) {
				err = check(fmt.Sprintf("SIZE(%d)", st.Size))
			}
			return err
		})
	}
	if cerr := c.call("close", func() error { return unix.Close(fd) }); err == nil {
		err = cerr
	}
	return err
}

// readFile opens name and checks it holds want.
func (c *client) readFile(name string, want []byte) error {
	var fd int
	err := c.call("open", func() (err error) {
		fd, err = unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return err
	}
	err = c.call("read", func() error {
		buf := make([]byte, len(want)+1)
		n, err := unix.Read(fd, buf)
		if err == nil && !bytes.Equal(buf[:n], want) {
			err = check(fmt.Sprintf("BADDATA(%d bytes)", n))
		}
		return err
	})
	if cerr := c.call("close", func() error { return unix.Close(fd) }); err == nil {
		err = cerr
	}
	return err
}

// list reads dir and checks it shows present and not absent ("" for none).
func (c *client) list(dir, present, absent string) error {
	var names []string
	err := c.call("readdir", func() (err error) {
		names, err = readNames(dir)
		if err == nil && present != "" && !slices.Contains(names, present) {
			err = check("MISSING(" + present + ")")
		}
		if err == nil && absent != "" && slices.Contains(names, absent) {
			err = check("STALE(" + absent + ")")
		}
		return err
	})
	return err
}

// readNames is open(O_DIRECTORY) + getdents until the end + close.
func readNames(dir string) ([]string, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// The held file: a counter at offset 0 (write(2)) and at heldMapAt (the map).
const (
	heldSize  = 8192
	heldMapAt = 4096
)

// HeldPath is the file the holder holds, under mnt.
func HeldPath(mnt string) string { return filepath.Join(mnt, "held", "file") }

// held is the holder's open, locked, mapped file.
type held struct {
	fd  int
	mem []byte
}

// openHeld opens the held file through MNT, locks it and maps it.
func (c *client) openHeld() (*held, error) {
	path := HeldPath(c.Mnt)
	if err := unix.Mkdir(filepath.Dir(path), 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	h := &held{fd: fd}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("flock: %w", err)
	}
	if err := unix.Ftruncate(fd, heldSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ftruncate: %w", err)
	}
	if h.mem, err = unix.Mmap(fd, 0, heldSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return h, nil
}

// closeHeld syncs the map and the file and lets go of both.
func (c *client) closeHeld(h *held) error {
	err := c.call("msync", func() error { return unix.Msync(h.mem, unix.MS_SYNC) })
	unix.Munmap(h.mem)
	if ferr := c.call("fsync", func() error { return unix.Fsync(h.fd) }); err == nil {
		err = ferr
	}
	if cerr := c.call("close", func() error { return unix.Close(h.fd) }); err == nil {
		err = cerr
	}
	return err
}

// counterBytes is the record the holder writes for counter n.
func counterBytes(n int64) []byte {
	return []byte(fmt.Sprintf("counter %016d\n", n))
}

// HeldCounter reads the counter at offset 0 and in the map's place from b
// (the held file's bytes, as read from SOURCE).
func HeldCounter(b []byte) (written, mapped int64, err error) {
	if len(b) < heldSize {
		return 0, 0, fmt.Errorf("%d bytes, want %d", len(b), heldSize)
	}
	if _, err := fmt.Sscanf(string(b[:25]), "counter %d\n", &written); err != nil {
		return 0, 0, fmt.Errorf("at 0: %q: %w", b[:25], err)
	}
	if _, err := fmt.Sscanf(string(b[heldMapAt:heldMapAt+25]), "counter %d\n", &mapped); err != nil {
		return 0, 0, fmt.Errorf("at %d: %q: %w", heldMapAt, b[heldMapAt:heldMapAt+25], err)
	}
	return written, mapped, nil
}

// holder keeps the held file open, locked and mapped, writing a counter
// through write(2) and through the map and reading it back. With Reopen, a
// file whose mount is gone (ENOTCONN) is opened again through MNT.
func (c *client) holder() error {
	h, err := c.openHeld()
	if err != nil {
		return err
	}
	ready()
	lastSync := time.Now()
	for n := int64(1); !c.stop.Load(); n++ {
		err := c.holdOnce(h, n, time.Since(lastSync) > 50*time.Millisecond)
		if err == nil {
			c.p.Counter = n
			lastSync = time.Now()
		}
		if err != nil && isGone(err) && c.Reopen {
			unix.Munmap(h.mem)
			unix.Close(h.fd)
			if h = c.reopenHeld(); h == nil {
				return nil // told to stop while its mount was dead
			}
		}
		c.pause()
	}
	c.closeHeld(h) // its failures are counted like any other call's
	return nil
}

// holdOnce writes counter n both ways and reads it back (and syncs the
// map, when sync); it returns the first error.
func (c *client) holdOnce(h *held, n int64, sync bool) error {
	rec := counterBytes(n)
	if err := c.call("pwrite", func() error { _, err := unix.Pwrite(h.fd, rec, 0); return err }); err != nil {
		return err
	}
	copy(h.mem[heldMapAt:], rec)
	err := c.call("pread", func() error {
		buf := make([]byte, len(rec))
		k, err := unix.Pread(h.fd, buf, 0)
		if err == nil && !bytes.Equal(buf[:k], rec) {
			err = check("BADDATA")
		}
		return err
	})
	if err == nil && sync {
		err = c.call("msync", func() error { return unix.Msync(h.mem, unix.MS_SYNC) })
	}
	return err
}

// reopenHeld opens the held file again, until it succeeds or the client is
// told to stop (nil then): the mount may be dead until something starts
// it again.
func (c *client) reopenHeld() *held {
	for !c.stop.Load() {
		var h *held
		err := c.call("reopen", func() (err error) { h, err = c.openHeld(); return err })
		if err == nil {
			c.p.Reopened++
			return h
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// lockprobe checks, over and over, that the held file's lock is taken:
// flock(LOCK_EX|LOCK_NB) on a file description of its own must fail with
// EWOULDBLOCK. A lock granted is a failure ("flock GRANTED"), let go at once.
func (c *client) lockprobe() error {
	path := HeldPath(c.Mnt)
	ready()
	for !c.stop.Load() {
		var fd int
		err := c.call("open", func() (err error) {
			fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			return err
		})
		if err == nil {
			c.call("flock", func() error {
				err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
				switch {
				case errors.Is(err, unix.EWOULDBLOCK):
					return nil
				case err == nil:
					unix.Flock(fd, unix.LOCK_UN)
					return check("GRANTED")
				}
				return err
			})
			c.call("close", func() error { return unix.Close(fd) })
		}
		c.pause()
		time.Sleep(5 * time.Millisecond) // a probe, not a load
	}
	return nil
}

// cwd works by relative names in its working folder MNT/cwd, entering it
// again by its full name every 250 ms (and, with Reopen, after ENOTCONN).
func (c *client) cwd() error {
	dir := filepath.Join(c.Mnt, "cwd")
	if err := unix.Mkdir(dir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	ready()
	entered := time.Now()
	for i := int64(0); !c.stop.Load(); i++ {
		err := c.cwdOnce(i)
		if time.Since(entered) > 250*time.Millisecond || (err != nil && isGone(err) && c.Reopen) {
			c.call("chdir", func() error { return unix.Chdir(dir) })
			entered = time.Now()
		}
		c.pause()
	}
	return nil
}

func (c *client) cwdOnce(i int64) error {
	if err := c.call("stat", func() error { var st unix.Stat_t; return unix.Stat(".", &st) }); err != nil {
		return err
	}
	data := payload(i)
	if err := c.writeFile("r", data); err != nil {
		return err
	}
	if err := c.readFile("r", data); err != nil {
		return err
	}
	return c.list(".", "r", "")
}
