package mounts

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Gone returns a channel closed once m has left this process's mount
// table, or once stop is closed. The kernel flags /proc/self/mountinfo
// (POLLPRI) on every change of the table; the poll also wakes every second
// so that a closed stop is seen.
func Gone(m Mount, stop <-chan struct{}) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		f, err := os.Open(selfTable)
		if err != nil {
			<-stop
			return
		}
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ms, err := reread(f); err == nil && !Has(ms, m) {
				return
			}
			fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
			unix.Poll(fds, 1000)
		}
	}()
	return gone
}

// reread reads an open mountinfo file again from the start.
func reread(f *os.File) ([]Mount, error) {
	if _, err := f.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return Parse(f)
}
