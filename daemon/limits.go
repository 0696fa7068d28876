package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// raiseFdLimit raises the limit on open descriptors as far as it goes: every
// file a user holds open through the mirror holds one of the daemon's, so
// one user could otherwise use them all up and leave the others EMFILE. Go
// already raises the soft limit to the hard one; root (with
// CAP_SYS_RESOURCE) raises the hard limit too, to the kernel's ceiling
// (fs.nr_open). It returns the limit in force and, when the hard limit
// could not be raised, why.
func raiseFdLimit() (uint64, string) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err.Error()
	}
	var why string
	if ceiling, err := nrOpen(); err == nil && ceiling > lim.Max && os.Geteuid() == 0 {
		err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: ceiling, Max: ceiling})
		if err == nil {
			return ceiling, ""
		}
		why = fmt.Sprintf("the hard limit; fs.nr_open is %d, but raising to it: %v", ceiling, err)
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
		why = err.Error()
	}
	return lim.Cur, why
}

// nrOpen is the most descriptors the kernel lets a process have.
func nrOpen() (uint64, error) {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}
