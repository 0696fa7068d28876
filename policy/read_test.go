package policy

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLoadRefusesWhatIsNotAPolicyFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxFileSize)+"\nread_only = true\n"), 0o644)
	empty := filepath.Join(dir, "empty.toml")
	os.WriteFile(empty, []byte("\n  # only a comment\n\t\n"), 0o644)
	link := filepath.Join(dir, "link.toml")
	os.Symlink(big, link)
	for path, want := range map[string]string{
		fifo:        "policy " + fifo + ": is a FIFO, not a regular file",
		"/dev/zero": "policy /dev/zero: is a character device, not a regular file",
		dir:         "policy " + dir + ": is a directory, not a regular file",
		big:         "policy " + big + ": larger than 8 MiB",
		empty:       "policy " + empty + ": has no setting (empty, or only comments)",
		link:        "policy " + link + ": larger than 8 MiB", // followed, then checked
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Load(%s) = %v, want an error starting %q", path, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Load(%s) hangs", path)
		}
	}
}

// TestReadFileWaitsForTheFileToSettle: a file changed a moment ago is read
// only once it has stood still for settleTime.
func TestReadFileWaitsForTheFileToSettle(t *testing.T) {
	name := filepath.Join(t.TempDir(), "p.toml")
	os.WriteFile(name, []byte("read_only = true\n"), 0o644)
	var st syscall.Stat_t
	syscall.Stat(name, &st)
	b, err := ReadFile(name)
	if err != nil || string(b) != "read_only = true\n" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if age := time.Since(time.Unix(st.Ctim.Unix())); age < settleTime {
		t.Errorf("read %v after the last change, before the file had settled (%v)", age, settleTime)
	}
}
