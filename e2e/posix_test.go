package e2e

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// TestPosix runs go-fuse's POSIX conformance checks against the mirror, in
// both data paths: kernel passthrough and reads/writes through the daemon.
func TestPosix(t *testing.T) {
	for _, mode := range []struct{ name, opts string }{{"passthrough", "rw"}, {"nopassthrough", "nopassthrough"}} {
		t.Run(mode.name, func(t *testing.T) {
			names := make([]string, 0, len(posixtest.All))
			for name := range posixtest.All {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				t.Run(name, func(t *testing.T) {
					e := newEnv(t)
					e.start("-o", mode.opts)
					posixtest.All[name](t, e.mnt)
				})
			}
		})
	}
}
