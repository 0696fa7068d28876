//go:build linux && cgo

package daemon

// The pre-runtime stage runs as an ELF constructor: after the dynamic loader,
// before the Go runtime starts its first thread. For a background mount
// request it forks, detaches (setsid, second fork, chdir /, umask 0, stdio on
// /dev/null) and leaves the original process waiting on a status pipe; for
// anything else it returns at once. The C lives in pre_runtime.c; the
// protocol is in README.md beside it.

/*
#cgo CFLAGS: -Wall -Werror -std=gnu11
#include "pre_runtime.h"

__attribute__((constructor)) static void mirrorfs_pre_runtime(int argc, char **argv)
{
	mfs_pre_runtime(argc, argv);
}
*/
import "C"

// readStage returns what the pre-runtime stage left for Go.
func readStage() stage {
	if C.mfs_stage_ran() == 0 {
		return stage{}
	}
	return stage{ran: true, statusFd: int(C.mfs_status_fd()), cwd: C.GoString(C.mfs_orig_cwd())}
}
