package fs

import (
	"encoding/binary"

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
// dev is the mirror's own copy of the session's /dev/fuse descriptor
// (Mirror.dev): go-fuse does not export its own.
func incEpoch(dev int) error {
	var msg [16]byte // struct fuse_out_header: len, error (the code), unique 0
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint32(msg[4:], notifyIncEpoch)
	_, err := unix.Write(dev, msg[:])
	return err
}
