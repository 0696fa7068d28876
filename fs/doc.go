// Package fs is the mirror itself: a descriptor-relative loopback of a
// source directory on go-fuse's Inode API, with the policy (read-only,
// hidden names) applied in front of each operation and swapped whole on
// reload.
//
// Each operation names one entry below a kept O_PATH descriptor of its
// folder, following no symlink (at.go); it reuses go-fuse's LoopbackFile
// and directory stream, not LoopbackNode. A node is its file, not its name:
// a folder or file reopened by name is checked to be the node's inode.
//
// With allow_other the daemon serves every local user as root, so a
// request of a caller who is not root is carried out with her credentials
// (creds.go); ioctls are an allowlist acting on the daemon's own descriptor
// (ioctl.go); hidden names are matched as SOURCE stores them (names.go).
// As root, the mount is made with the mount API on a descriptor of the
// mountpoint and unmounted through a descriptor of its parent (kmount.go,
// attachment.go, unmount.go); otherwise fusermount3 mounts it. Passthrough
// is used where the kernel allows it, and its real state is reported
// (passthrough.go).
package fs
