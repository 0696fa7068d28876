// Package fs is the mirror itself: a descriptor-relative loopback of a
// source directory on go-fuse's Inode API, with the policy (read-only,
// hidden names) checked in front of each operation and swapped whole on
// reload. It owns the go-fuse server and every way of ending the mount.
//
// Each operation names one entry below a kept O_PATH descriptor of its
// folder, following no symlink; it reuses go-fuse's LoopbackFile and
// directory stream, not LoopbackNode. A node is its file, not its name: a
// folder or file reopened by name is checked to be the node's inode. With
// allow_other the daemon serves every local user as root, so a request of
// a caller who is not root is carried out with her credentials, and an
// ioctl runs only from an allowlist, on the daemon's own descriptor. As
// root the mirror mounts through the mount API on descriptors; otherwise
// fusermount3 mounts it.
//
// One file per layer, from the kernel's request down to SOURCE:
//
//	methods.go      the go-fuse node methods: check the policy, call the operation
//	guard.go        the policy checks (read_only, hidden node or name) and what a reload promises
//	names.go        hidden names matched as SOURCE stores them; storedPath, the path patterns see
//	loopback.go     the operations: the *at syscalls on a folder descriptor and one name
//	locate.go       locating: loc, locate*, the kept folder descriptors (dirRef), walking by path
//	handles.go      open files and folders (file, dir) and each node's list of them
//	listing.go      the listing cache (FOPEN_CACHE_DIR) and what a listing leaves out
//	creds.go        carrying out a request with the caller's credentials
//	umask.go        the caller's umask, applied where SOURCE would (no default ACL)
//	idmap.go        -o uid=, gid=, umask=: what a stat shows, and SOURCE checking each step under it
//	ioctl.go        the ioctl allowlist, run on the daemon's own descriptor
//	writeback.go    marks the WRITEs that carry a shared map's pages back (kept in place)
//	passthrough.go  passthrough registration, and its real state reported
//	watch.go        changes on SOURCE told to the kernel (fanotify or inotify)
//	stats.go        the session's counters, by a RawFileSystem wrapper
//	epoch.go        FUSE_NOTIFY_INC_EPOCH, so no entry cached under an old policy is used
//	node.go         the node and what all nodes of a mirror share; reply timeouts
//	mount.go        Mount, Mirror, SetPolicy and the go-fuse options
//	kmount.go       mounting as root through the mount API, on descriptors
//	attachment.go   where a mount made as root sits, to unmount that very mount
//	beneath.go      a mount slid beneath the old daemon's, for a takeover
//	unmount.go      Mirror.Stop: unmount, lazy detach, fusectl abort, bounded waits
package fs
