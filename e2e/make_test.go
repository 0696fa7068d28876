package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeHelpAndRaceTests: `make help` lists every documented target, its
// name digits and all; `make race` refuses a RACE_TESTS name that matches
// no test instead of running none; `make unit` covers policy/ and mounts/.
func TestMakeHelpAndRaceTests(t *testing.T) {
	b, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	mk := filepath.Join(t.TempDir(), "Makefile")
	os.WriteFile(mk, append(b, "\n.PHONY: x2y\nx2y: ## a target with a digit\n\t@true\n"...), 0o644)
	out, _ := exec.Command("make", "-s", "-f", mk, "help").CombinedOutput()
	for _, line := range strings.Split(string(b)+"x2y: ## \n", "\n") {
		if name, _, ok := strings.Cut(line, ": "); ok && strings.Contains(line, "## ") && !strings.ContainsAny(name, " $\t") {
			if !strings.Contains(string(out), "  "+name+" ") {
				t.Errorf("make help does not list %s:\n%s", name, out)
			}
		}
	}

	cmd := exec.Command("make", "-s", "race", "RACE_TESTS=TestNoSuchTest|TestCtlVerbs")
	cmd.Dir = ".."
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "RACE_TESTS: TestNoSuchTest matches no test") {
		t.Errorf("make race with a name matching nothing: %v\n%s", err, out)
	}

	out, _ = exec.Command("make", "-n", "-C", "..", "unit").CombinedOutput()
	for _, pkg := range []string{"./policy/", "./mounts/"} {
		if !strings.Contains(string(out), pkg) {
			t.Errorf("make unit skips %s: %s", pkg, out)
		}
	}
}
