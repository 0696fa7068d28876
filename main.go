// Command mirrorfs mirrors a folder at a mountpoint through FUSE, as a
// well-behaved daemon. See daemon/usage.txt (mirrorfs --help) and README.md.
package main

import (
	"os"

	"mirrorfs/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args, daemon.OSEnv()))
}
