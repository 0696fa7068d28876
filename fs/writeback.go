package fs

import (
	"context"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// writebacks marks the WRITEs that carry a shared map's pages back to the
// file (FUSE_WRITE_CACHE): their offset is the page's, to be kept even on
// an O_APPEND descriptor, where every other write goes to the end. go-fuse
// hands a file the offset but not the flag; the flag is kept in
// writingBackNow, by the request's cancel channel, which is its context's
// Done and unique among the requests in flight (as umasks does).
type writebacks struct{ fuse.RawFileSystem }

// writingBackNow holds the cancel channels of the WRITEs in flight that
// carry a map's pages back. (One for the process: the channels are unique
// across mirrors too.)
var writingBackNow sync.Map

func (w *writebacks) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_CACHE == 0 {
		return w.RawFileSystem.Write(cancel, in, data)
	}
	writingBackNow.Store(cancel, struct{}{})
	defer writingBackNow.Delete(cancel)
	return w.RawFileSystem.Write(cancel, in, data)
}

func (w *writebacks) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_CACHE == 0 {
		return w.RawFileSystem.Writev(cancel, in, data)
	}
	writingBackNow.Store(cancel, struct{}{})
	defer writingBackNow.Delete(cancel)
	return w.RawFileSystem.Writev(cancel, in, data)
}

// writingBack says whether ctx's request carries a map's pages back.
func writingBack(ctx context.Context) bool {
	_, ok := writingBackNow.Load(ctx.Done())
	return ok
}

// Open and Create drop FOPEN_DIRECT_IO from a reply that go-fuse's bridge
// gave passthrough: the kernel lets FOPEN_DIRECT_IO override passthrough
// (fs/fuse/file.c, fuse_file_write_iter), and an appending descriptor's
// writes would then come to the daemon, as root's write keeping set-id
// bits that a passthrough write clears. Passthrough appends at the file's
// real end by itself.
func (w *writebacks) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := w.RawFileSystem.Open(cancel, in, out)
	passthroughWins(out)
	return st
}

func (w *writebacks) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := w.RawFileSystem.Create(cancel, in, name, out)
	passthroughWins(&out.OpenOut)
	return st
}

func passthroughWins(out *fuse.OpenOut) {
	if out.OpenFlags&fuse.FOPEN_PASSTHROUGH != 0 {
		out.OpenFlags &^= fuse.FOPEN_DIRECT_IO
	}
}
