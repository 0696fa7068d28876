package fs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// backing stands between go-fuse's node bridge and the server for backing
// file (passthrough) registration. go-fuse turns passthrough off for the whole
// mount at the first failed registration, silently; backing sees the failure,
// records why and logs it once.
type backing struct {
	srv      *fuse.Server
	disabled bool // -o nopassthrough
	log      *slog.Logger

	mu    sync.Mutex
	state string
}

func (b *backing) DeleteNotify(parent, child uint64, name string) fuse.Status {
	return b.srv.DeleteNotify(parent, child, name)
}
func (b *backing) EntryNotify(parent uint64, name string) fuse.Status {
	return b.srv.EntryNotify(parent, name)
}
func (b *backing) InodeNotify(node uint64, off, length int64) fuse.Status {
	return b.srv.InodeNotify(node, off, length)
}
func (b *backing) InodeRetrieveCache(node uint64, offset int64, dest []byte) (int, fuse.Status) {
	return b.srv.InodeRetrieveCache(node, offset, dest)
}
func (b *backing) InodeNotifyStoreCache(node uint64, offset int64, data []byte) fuse.Status {
	return b.srv.InodeNotifyStoreCache(node, offset, data)
}

// RegisterBackingFd is called by go-fuse on the first open of an inode.
func (b *backing) RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno) {
	if b.disabled {
		return 0, syscall.ENOSYS
	}
	id, errno := b.srv.RegisterBackingFd(m)
	if errno != 0 {
		b.set(fmt.Sprintf("off (registering a backing file failed: %v)", errno), slog.LevelWarn)
	} else {
		b.set("on", slog.LevelInfo)
	}
	return id, errno
}

func (b *backing) UnregisterBackingFd(id int32) syscall.Errno {
	return b.srv.UnregisterBackingFd(id)
}

// set records a new state and logs a change.
func (b *backing) set(state string, level slog.Level) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == state || strings.HasPrefix(b.state, "off") {
		return // off is final: go-fuse does not try again
	}
	b.state = state
	b.log.Log(context.Background(), level, "passthrough", "state", state)
}

// State is "on", "off (why)" or "unknown (why)".
func (b *backing) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// probe finds out at start-up whether passthrough works for files of the
// source, by registering an unnamed temporary file there.
func (b *backing) probe(source string) {
	switch {
	case b.disabled:
		b.set("off (-o nopassthrough)", slog.LevelInfo)
		return
	case b.srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0:
		b.set("off (the kernel does not offer FUSE passthrough)", slog.LevelInfo)
		b.disabled = true
		return
	}
	fd, err := unix.Open(source, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		b.set(fmt.Sprintf("unknown until the first open (no temporary file in the source: %v)", err), slog.LevelInfo)
		return
	}
	defer unix.Close(fd)
	id, errno := b.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno == 0 {
		b.srv.UnregisterBackingFd(id)
	}
}

// maxStackDepth is what the source needs: one more level over overlayfs.
func maxStackDepth(source string) int {
	var st unix.Statfs_t
	if unix.Statfs(source, &st) == nil && st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		return 2
	}
	return 1
}
