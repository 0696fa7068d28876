package fs

import (
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// notifyIncEpoch is FUSE_NOTIFY_INC_EPOCH (Linux 6.16, protocol 7.44).
const notifyIncEpoch = 8

// incEpoch tells the kernel that every entry it has cached was decided
// under a policy no longer in force. The kernel notes the epoch when a
// LOOKUP *starts*, and an entry of an older epoch fails its next use and
// is looked up again: so a reply computed under the old policy, even one
// written to /dev/fuse after this call, cannot be used from the cache
// afterwards. That is what closes the window between a request's method
// returning and go-fuse writing its reply, which nothing in go-fuse lets
// the mirror observe. A kernel without it answers EINVAL (ENOSYS here).
func incEpoch(srv *fuse.Server) error {
	f := fuseFile(srv)
	if f == nil {
		return errors.New("no /dev/fuse descriptor found in the server")
	}
	var msg [16]byte // struct fuse_out_header: len, error (the code), unique 0
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint32(msg[4:], notifyIncEpoch)
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := conn.Write(func(fd uintptr) bool {
		_, werr = unix.Write(int(fd), msg[:])
		return true
	}); err != nil {
		return err
	}
	return werr
}

// fuseFile is the server's /dev/fuse file. go-fuse sends no INC_EPOCH and
// does not export its descriptor; the file is read from its unexported
// field, and through the file (not a bare number) so that the write holds
// a reference and cannot reach a reused descriptor. nil if go-fuse's
// layout differs from the one this was written for.
func fuseFile(srv *fuse.Server) *os.File {
	if srv == nil {
		return nil
	}
	fd := reflect.ValueOf(srv).Elem().FieldByName("fuseFD")
	if !fd.IsValid() || fd.Kind() != reflect.Pointer || fd.IsNil() {
		return nil
	}
	file := fd.Elem().FieldByName("file")
	if !file.IsValid() || file.Type() != reflect.TypeOf((*os.File)(nil)) {
		return nil
	}
	return *(**os.File)(unsafe.Pointer(file.UnsafeAddr()))
}
