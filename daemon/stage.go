package daemon

import (
	"errors"
	"os"
)

// stage is what the pre-runtime stage handed over to Go.
type stage struct {
	ran      bool
	statusFd int    // write end of the status pipe, when ran
	cwd      string // the directory the user ran the command in, when ran
}

// errNoStage is returned when a background start was asked for but the
// binary was built without the pre-runtime stage (CGO_ENABLED=0, or a linker
// mode that drops ELF constructors).
var errNoStage = errors.New("this binary was built without its pre-runtime stage (CGO_ENABLED=0?), so it cannot detach; rebuild with cgo, or run with -f")

// workdir is the directory relative paths on the command line refer to.
func (s stage) workdir() (string, error) {
	if s.ran {
		return s.cwd, nil
	}
	return os.Getwd()
}
