package fs

import (
	"context"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// node is one file or directory of the mirror. It is go-fuse's LoopbackNode;
// the policy hooks of later features are methods on it.
type node struct {
	*gofs.LoopbackNode
}

var _ = (gofs.NodeWrapChilder)((*node)(nil))

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &node{ops.(*gofs.LoopbackNode)}
}
