//go:build linux && cgo

// Package stagetest builds the daemon's pre-runtime stage a second time,
// with MFS_TEST defined, so that tests can call its C functions: _test.go
// files cannot use cgo. pre_runtime.c and .h here are links to the
// daemon's (a link, not an #include of ../../, so that the build cache sees
// every change). Nothing here is linked into mirrorfs; no constructor is
// registered.
package stagetest

/*
#cgo CFLAGS: -Wall -Werror -std=gnu11 -DMFS_TEST -DFIRST_WORD_MS=1500 -DSTOP_GRACE_MS=300
#include <stdlib.h>
#include "pre_runtime.h"
*/
import "C"

import (
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The bounds this build of the stage was compiled with.
const (
	FirstWord = 1500 * time.Millisecond
	StopGrace = 300 * time.Millisecond
)

// Gate asks the C gate whether argv is a background mount request.
func Gate(argv []string, notifySocket string) bool {
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

// FirstWordAfter runs the gate on argv and returns how long the original
// process would then wait for the daemon's first word.
func FirstWordAfter(argv []string) time.Duration {
	Gate(argv, "")
	return time.Duration(C.mfs_test_first_word_ms()) * time.Millisecond
}

// DurationMs is the stage's reading of a Go duration in milliseconds, -1
// when it reads none.
func DurationMs(s string) int64 {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return int64(C.mfs_test_duration_ms(cs))
}

// Outcome is how the original process's wait ended.
type Outcome struct {
	Code           int    // its exit code
	Stdout, Stderr string // what it printed
	Took           time.Duration
}

// waitMu serialises Wait: the stage's output fds and its interrupted flag
// are globals.
var waitMu sync.Mutex

// Wait runs the original process's wait for the daemon on the read end r
// of a status pipe, as if the daemon's first child were group (a process
// group id) and the daemon pid (0: not announced yet), and as if signal
// interrupted had arrived (0: none). Both pids receive SIGTERM and SIGKILL
// on a timeout: pass processes the test owns, never 0.
func Wait(r *os.File, group, daemon int, interrupted syscall.Signal) Outcome {
	if group <= 0 || daemon < 0 {
		panic("stagetest.Wait: group must name a real process group")
	}
	waitMu.Lock()
	defer waitMu.Unlock()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	out, errOut := drain(outR), drain(errR)
	C.mfs_test_out, C.mfs_test_err = C.int(outW.Fd()), C.int(errW.Fd())
	began := time.Now()
	code := C.mfs_test_wait(C.int(r.Fd()), C.int(group), C.int(daemon), C.int(interrupted))
	took := time.Since(began)
	C.mfs_test_out, C.mfs_test_err = 1, 2
	outW.Close()
	errW.Close()
	return Outcome{Code: int(code), Stdout: <-out, Stderr: <-errOut, Took: took}
}

func drain(r *os.File) <-chan string {
	c := make(chan string, 1)
	go func() {
		defer r.Close()
		b, _ := io.ReadAll(r)
		c <- string(b)
	}()
	return c
}
