package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSetIDClearedOnlyThroughTheFile: the one change made as root for
// another user, clearing the set-id bits of a file she writes, is made on an
// open descriptor of that file, never by name. Here the file she owns
// (according to the kernel's cached attributes) became root's on SOURCE
// behind the cache, as a swap of names would make it; her chmod that
// "only clears set-id bits" must not reach root's file.
func TestSetIDClearedOnlyThroughTheFile(t *testing.T) {
	for mode, opts := range modes {
		t.Run(mode, func(t *testing.T) {
			uid, gid := adversary(t)
			e := newEnv(t)
			openUp(e)
			os.Chmod(e.src, 0o777)
			x := filepath.Join(e.src, "x")
			os.WriteFile(x, []byte("payload"), 0o644)
			os.Chown(x, uid, gid)
			syscall.Chmod(x, 0o6777)
			e.start(append([]string{"-o", "allow_other"}, opts...)...)
			if _, err := os.Stat(filepath.Join(e.mnt, "x")); err != nil { // cached: hers
				t.Fatal(err)
			}
			os.Chown(x, 0, 0) // root's now; chown cleared the set-id bits
			syscall.Chmod(x, 0o6777)
			out, err := asAdversary(t, "chmod", "4777", filepath.Join(e.mnt, "x"))
			var st syscall.Stat_t
			syscall.Stat(x, &st)
			if st.Uid != 0 || st.Mode&0o7777 != 0o6777 {
				t.Errorf("root's file on SOURCE is %d:%d mode %04o after her chmod (%v, %q); want 0:0 06777",
					st.Uid, st.Gid, st.Mode&0o7777, err, out)
			}
		})
	}
}
