// Package mounts reads the kernel's mount table (/proc/self/mountinfo) and
// holds the kernel helpers that act on a mount without sending it a request:
// a lazy detach, an abort of its FUSE connection through fusectl, its
// fusectl "waiting" counter, and a watch of the table (POLLPRI). The
// daemon, the file system, the tests and the benchmark all read the table
// through it.
package mounts

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	ID         int    // reused by the kernel once the mount is gone
	Parent     int    // the id of the mount it is mounted on
	Dev        string // major:minor; for FUSE, the connection
	Mountpoint string
	FSType     string
	Source     string
}

// Parse reads the format of proc(5)'s /proc/PID/mountinfo.
func Parse(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		m, err := parseMountLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		mounts = append(mounts, m)
	}
	return mounts, sc.Err()
}

// parseMountLine parses
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func parseMountLine(line string) (Mount, error) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Mount{}, fmt.Errorf("no separator in %q", line)
	}
	f, g := strings.Fields(pre), strings.Fields(post)
	if len(f) < 6 || len(g) < 2 {
		return Mount{}, fmt.Errorf("too few fields in %q", line)
	}
	id, err := strconv.Atoi(f[0])
	if err != nil {
		return Mount{}, fmt.Errorf("mount id %q: %w", f[0], err)
	}
	parent, err := strconv.Atoi(f[1])
	if err != nil {
		return Mount{}, fmt.Errorf("parent id %q: %w", f[1], err)
	}
	return Mount{ID: id, Parent: parent, Dev: f[2], Mountpoint: unescapeOctal(f[4]), FSType: unescapeOctal(g[0]), Source: unescapeOctal(g[1])}, nil
}

// unescapeOctal undoes the kernel's \ooo escapes (space, tab, newline, backslash).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 || s[0] > '3' {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// Read returns this process's mount table.
func Read() ([]Mount, error) {
	f, err := os.Open(selfTable)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

const selfTable = "/proc/self/mountinfo"

// TopAt returns the mount that is visible at path, if any: of the mounts
// stacked there, the one no other is mounted on. The table's order does
// not tell: a mount slid beneath the top one (MOVE_MOUNT_BENEATH, a
// takeover) is listed after it.
func TopAt(mounts []Mount, path string) (Mount, bool) {
	covered := map[int]bool{}
	for _, m := range mounts {
		if m.Mountpoint == path {
			covered[m.Parent] = true
		}
	}
	// The last one listed of those: a mount over a folder above path can
	// hide an older stack there, and the newer one is the one seen.
	for i := len(mounts) - 1; i >= 0; i-- {
		if m := mounts[i]; m.Mountpoint == path && !covered[m.ID] {
			return m, true
		}
	}
	return Mount{}, false
}

// Has reports whether mount m is still in the table. The kernel
// reuses ids and FUSE device numbers, so all three must agree.
func Has(mounts []Mount, m Mount) bool {
	for _, o := range mounts {
		if o.ID == m.ID && o.Dev == m.Dev && o.Mountpoint == m.Mountpoint {
			return true
		}
	}
	return false
}
