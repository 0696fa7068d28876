package daemon

import (
	"strings"
	"testing"
)

func TestEscapePath(t *testing.T) {
	for in, want := range map[string]string{
		"/":            "-",
		"/mnt/data":    "mnt-data",
		"/mnt/data/":   "mnt-data",
		"/mnt/my data": `mnt-my\x20data`,
		"/srv/.hidden": "srv-.hidden",
		"/.dot":        `\x2edot`,
		"/a-b/c_d:e.f": `a\x2db-c_d:e.f`,
		"/mnt//x/../y": "mnt-y",
	} {
		if got := escapePath(in); got != want {
			t.Errorf("escapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolve(t *testing.T) {
	c := &Config{Source: "src", Mountpoint: "sub/../mnt", Pidfile: "run/x.pid", Log: "/var/x.log"}
	if err := c.resolve("/home/u", env(nil)); err != nil {
		t.Fatal(err)
	}
	if c.Source != "/home/u/src" || c.Mountpoint != "/home/u/mnt" || c.Pidfile != "/home/u/run/x.pid" || c.Log != "/var/x.log" {
		t.Errorf("resolve: %+v", c)
	}
}

func TestDefaultDirs(t *testing.T) {
	run, log, err := defaultDirs(0, env(nil))
	if err != nil || run != "/run/mirrorfs" || log != "/var/log/mirrorfs" {
		t.Errorf("root: %q %q %v", run, log, err)
	}
	run, log, err = defaultDirs(1000, env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"}))
	if err != nil || run != "/run/user/1000/mirrorfs" || log != "/home/u/.local/state/mirrorfs" {
		t.Errorf("user: %q %q %v", run, log, err)
	}
	_, log, _ = defaultDirs(1000, env(map[string]string{"XDG_RUNTIME_DIR": "/r", "XDG_STATE_HOME": "/s"}))
	if log != "/s/mirrorfs" {
		t.Errorf("XDG_STATE_HOME ignored: %q", log)
	}
	_, _, err = defaultDirs(1000, env(nil))
	if err == nil || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
		t.Errorf("no XDG_RUNTIME_DIR: err = %v", err)
	}
}

func TestWithin(t *testing.T) {
	for _, tt := range []struct {
		path, dir string
		want      bool
	}{
		{"/a/b", "/a", true},
		{"/a/b/c", "/a", true},
		{"/a", "/a", false},
		{"/ab", "/a", false},
		{"/a/..b", "/a", true},
		{"/", "/a", false},
	} {
		if got := within(tt.path, tt.dir); got != tt.want {
			t.Errorf("within(%q, %q) = %v, want %v", tt.path, tt.dir, got, tt.want)
		}
	}
}
