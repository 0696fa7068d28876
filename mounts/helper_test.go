package mounts

import (
	"errors"
	"fmt"
	"os/exec"
	"testing"
)

func TestHelperError(t *testing.T) {
	busy := fmt.Errorf("%s (code %v)\n", "fusermount3: failed to unmount /m: Device or resource busy\n",
		&exec.ExitError{})
	for _, c := range []struct {
		err  error
		want string
	}{
		{errors.New("fusermount exited with code 256\n"), "fusermount3 exited with status 1"},
		{errors.New("fusermount exited with code 9\n"), "fusermount3 killed by killed"},
		{errors.New("fusermount3: failed to unmount /m: Device or resource busy\n (code exit status 1)\n"),
			"fusermount3: failed to unmount /m: Device or resource busy (exit status 1)"},
		{errors.New("no such file"), "no such file"},
	} {
		got := HelperError(c.err)
		if got.Error() != c.want {
			t.Errorf("HelperError(%q) = %q, want %q", c.err, got, c.want)
		}
	}
	if !IsBusy(HelperError(busy)) {
		t.Error("busy lost")
	}
	if HelperError(nil) != nil {
		t.Error("nil became an error")
	}
}
