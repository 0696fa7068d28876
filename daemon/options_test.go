package daemon

import (
	"errors"
	"log/slog"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// TestFamiliarMountOptions: the -o options of other FUSE file systems are
// taken, or refused with the reason.
func TestFamiliarMountOptions(t *testing.T) {
	c, err := ParseArgs([]string{"s", "m", "-o", "default_permissions,nonempty,subtype=mirrorfs,allow_root,default_permissions"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.AllowRoot || len(c.KernelFlags) != 0 {
		t.Errorf("got AllowRoot=%v KernelFlags=%q", c.AllowRoot, c.KernelFlags)
	}
	for opts, why := range map[string]string{
		"kernel_cache":           "stale",
		"auto_cache":             "mtime",
		"subtype=sshfs":          "stays fuse.mirrorfs",
		"allow_root,allow_other": "exclude each other",
	} {
		_, err := ParseArgs([]string{"s", "m", "-o", opts})
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), why) {
			t.Errorf("-o %s: %v; want a usage error saying %q", opts, err, why)
		}
	}
	defer func(g func() int) { geteuid = g }(geteuid)
	geteuid = func() int { return 1000 }
	if _, err := ParseArgs([]string{"s", "m", "-o", "allow_root"}); err == nil || !strings.Contains(err.Error(), "uid 1000") {
		t.Errorf("allow_root for a user's mirror: %v", err)
	}
}

func TestLogLevelFlag(t *testing.T) {
	c, err := ParseArgs([]string{"--log-level", "warn", "s", "m"})
	if err != nil || c.LogLevel == nil || *c.LogLevel != slog.LevelWarn {
		t.Fatalf("--log-level warn: %+v, %v", c, err)
	}
	if _, err := ParseArgs([]string{"--log-level=loud", "s", "m"}); !errors.Is(err, ErrUsage) {
		t.Errorf("--log-level=loud: %v", err)
	}
	for _, argv := range [][]string{{"mirrorfs", "--log-level", "debug", "s", "m"}, {"mirrorfs", "s", "m", "--log-level=error"}} {
		if !gate(argv, "") || !goGate(argv, "") {
			t.Errorf("%q: the C gate (%v) and the parser (%v) must both detach", argv, gate(argv, ""), goGate(argv, ""))
		}
	}
}

func TestQuotedVersion(t *testing.T) {
	semver := regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
	info := &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tt := range []struct {
		v    string
		info *debug.BuildInfo
		want string
	}{{"1.2.3", nil, "1.2.3"}, {"dev", info, "0.0.0-dev+0123456789ab.dirty"}, {"dev", nil, "0.0.0-dev"}} {
		got := quotedVersion(tt.v, tt.info)
		if got != tt.want || !semver.MatchString(got) {
			t.Errorf("quotedVersion(%q) = %q, want %q (semver)", tt.v, got, tt.want)
		}
	}
}

// TestManPageHasEveryOption: every option --help names is in mirrorfs(8).
func TestManPageHasEveryOption(t *testing.T) {
	man := strings.ReplaceAll(manPage(usage(), "1.0.0"), `\-`, "-")
	opts := helpOptions(usage())
	if len(opts) < 20 {
		t.Fatalf("found only %q in --help", opts)
	}
	for _, o := range opts {
		if !strings.Contains(man, o) {
			t.Errorf("the man page lacks %q", o)
		}
	}
}

// helpOptions are the options --help lists: the flags and the -o words.
func helpOptions(help string) []string {
	var opts []string
	for _, line := range strings.Split(help, "\n") {
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if (indent == 2 || indent == 7) && trimmed != "" {
			term, _, _ := strings.Cut(trimmed, "  ")
			opts = append(opts, term)
		}
	}
	return opts
}
