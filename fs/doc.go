// Package fs is the mirror itself: go-fuse's loopback file system over a
// source directory, extended (not rewritten) through NodeWrapChilder, with
// explicit cache timeouts and FUSE passthrough whose real state is reported.
package fs
