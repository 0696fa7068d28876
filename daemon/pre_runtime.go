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
#include <stdlib.h>
#include "pre_runtime.h"

__attribute__((constructor)) static void mirrorfs_pre_runtime(int argc, char **argv)
{
	mfs_pre_runtime(argc, argv);
}
*/
import "C"

import "unsafe"

// readStage returns what the pre-runtime stage left for Go.
func readStage() stage {
	if C.mfs_stage_ran() == 0 {
		return stage{}
	}
	return stage{ran: true, statusFd: int(C.mfs_status_fd()), cwd: C.GoString(C.mfs_orig_cwd())}
}

// gate asks the C gate whether argv is a background mount request. It
// exists so that tests can hold the C gate and the Go parser to one answer.
func gate(argv []string, notifySocket string) bool {
	cargs := make([]*C.char, len(argv)+1)
	for i, a := range argv {
		cargs[i] = C.CString(a)
		defer C.free(unsafe.Pointer(cargs[i]))
	}
	var notify *C.char
	if notifySocket != "" {
		notify = C.CString(notifySocket)
		defer C.free(unsafe.Pointer(notify))
	}
	return C.mfs_gate(C.int(len(argv)), &cargs[0], notify) == C.MFS_GATE_DAEMONIZE
}
