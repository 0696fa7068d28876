package policy

import (
	"log/slog"
	"path"
	"strings"
	"testing"
	"time"
)

func mustPatterns(t *testing.T, ss ...string) []Pattern {
	t.Helper()
	var ps []Pattern
	for _, s := range ss {
		p, err := ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestHidden(t *testing.T) {
	tests := []struct {
		pattern string
		rel     string
		isDir   bool
		want    bool
	}{
		{"secret", "secret", false, true},
		{"secret", "a/b/secret", false, true},
		{"secret", "a/secret/b", false, false}, // the child is unreachable anyway
		{"secret", "secrets", false, false},
		{"*.key", "deep/down/id.key", false, true},
		{"*.key", "id.key.pub", false, false},
		{".*", ".env", false, true},
		{".*", "a/.git", true, true},
		{".*", "a.txt", false, false},
		{"[a-c]?", "b1", false, true},
		{`a\*b`, "a*b", false, true}, // a name with a glob metacharacter, escaped
		{`a\*b`, "axxb", false, false},
		{"a*b", "a*b", false, true},
		{"etc/passwd", "etc/passwd", false, true},
		{"etc/passwd", "x/etc/passwd", false, false}, // anchored at the root
		{"/top", "top", false, true},
		{"/top", "a/top", false, false},
		{"a/*/c", "a/b/c", false, true},
		{"a/*/c", "a/b/x/c", false, false},
		{"cache/", "cache", true, true},
		{"cache/", "cache", false, false}, // trailing slash: directories only
		{"cache/", "x/cache", true, true},
		{"x/cache/", "x/cache", true, true},
		{"x/cache/", "x/cache", false, false},
	}
	for _, tt := range tests {
		p := New(false, mustPatterns(t, tt.pattern))
		name := tt.rel[strings.LastIndexByte(tt.rel, '/')+1:]
		if got := p.Hidden(tt.rel, name, tt.isDir); got != tt.want {
			t.Errorf("pattern %q, %q (dir %v): hidden = %v, want %v", tt.pattern, tt.rel, tt.isDir, got, tt.want)
		}
	}
}

func TestNeedsPath(t *testing.T) {
	if New(false, mustPatterns(t, "*.key", "cache/")).NeedsPath() {
		t.Error("name-only patterns need no path")
	}
	if !New(false, mustPatterns(t, "*.key", "etc/x")).NeedsPath() {
		t.Error("an anchored pattern needs the path")
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, s := range []string{"", "/", ".", "..", "../x", "[x", `a\`, "a/[", "/./"} {
		if _, err := ParsePattern(s); err == nil {
			t.Errorf("ParsePattern(%q) succeeded", s)
		}
	}
}

// TestDecodeTimeouts: "0s" is no caching, not the default; a timeout the
// file does not set is the default.
func TestDecodeTimeouts(t *testing.T) {
	for _, c := range []struct {
		file        string
		entry, attr time.Duration
	}{
		{`read_only = false`, DefaultTimeout, DefaultTimeout},
		{`entry_timeout = "0s"`, 0, DefaultTimeout},
		{`attr_timeout = "0s"`, DefaultTimeout, 0},
		{"entry_timeout = \"0s\"\nattr_timeout = \"0ms\"", 0, 0},
		{"entry_timeout = \"3s\"\nattr_timeout = \"10ms\"", 3 * time.Second, 10 * time.Millisecond},
	} {
		p, err := Decode("p.toml", []byte(c.file))
		if err != nil {
			t.Fatalf("%q: %v", c.file, err)
		}
		if p.EntryTTL() != c.entry || p.AttrTTL() != c.attr {
			t.Errorf("%q: entry %v, attr %v; want %v, %v", c.file, p.EntryTTL(), p.AttrTTL(), c.entry, c.attr)
		}
	}
	if Default.EntryTTL() != DefaultTimeout || Default.AttrTTL() != DefaultTimeout {
		t.Errorf("Default: entry %v, attr %v", Default.EntryTTL(), Default.AttrTTL())
	}
	if _, err := Decode("p.toml", []byte(`entry_timeout = "-1s"`)); err == nil {
		t.Error("a negative timeout decoded")
	}
}

func TestDecode(t *testing.T) {
	p, err := Decode("p.toml", []byte(`
read_only = true
hide = ["*.key", "etc/secret", "cache/"]
entry_timeout = "2s"
attr_timeout = "500ms"
log_level = "debug"
`))
	if err != nil {
		t.Fatal(err)
	}
	if !p.ReadOnly || len(p.Hide) != 3 || !p.NeedsPath() || p.EntryTTL() != 2*time.Second ||
		p.AttrTTL() != 500*time.Millisecond || p.LogLevel != slog.LevelDebug {
		t.Errorf("decoded %+v", p)
	}
	if empty, err := Decode("e.toml", nil); err != nil || empty.ReadOnly || empty.Hides() {
		t.Errorf("an empty file: %+v, %v", empty, err)
	}
}

func TestDecodeErrorsNameFileLineKey(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"read_only = true\nbogus = 1\n", `p.toml:2: key "bogus": unknown key`},
		{"\nread_only = 'yes'\n", `p.toml:2: key "read_only": "yes" is not a boolean; expected true or false`},
		{"hide = [\n  'ok',\n  '[x',\n]\n", `p.toml:3: key "hide": pattern "[x": syntax error in pattern`},
		{"hide = 'x'\n", `p.toml:1: key "hide"`},
		{"\n\nentry_timeout = 'soon'\n", `p.toml:3: key "entry_timeout": "soon" is not a duration of 0 or more; expected a string like "1s" or "250ms"`},
		{"attr_timeout = '-1s'\n", `p.toml:1: key "attr_timeout": "-1s" is not a duration`},
		{"log_level = 'loud'\n", `p.toml:1: key "log_level": "loud" is not a log level; expected one of "debug", "info", "warn", "error"`},
		{"read_only = \n", `p.toml:1: key "read_only": `},
		{"\nread_only = maybe\n", `p.toml:2: key "read_only": unexpected character`},
		{"[hide]\nx = 1\n", `p.toml:1: key "hide": a table is not an array of patterns; expected an array of patterns`},
	}
	for _, tt := range tests {
		_, err := Decode("p.toml", []byte(tt.doc))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Decode(%q) = %v, want an error starting %q", tt.doc, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("read_only = true\nhide = ['*.key', 'a/b/']\n")
	f.Add("entry_timeout = '1s'\n")
	f.Fuzz(func(t *testing.T, doc string) {
		p, err := Decode("f.toml", []byte(doc))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.toml") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		for _, h := range p.Hide {
			p.Hidden("a/b", "b", true) // must not panic
			if _, err := ParsePattern(h.String()); err != nil {
				t.Errorf("pattern %q does not survive a round trip: %v", h, err)
			}
		}
	})
}

func FuzzHidden(f *testing.F) {
	f.Add("*.key", "a/b.key", false)
	f.Add("a/[b-c]/", "a/b", true)
	f.Fuzz(func(t *testing.T, pattern, rel string, isDir bool) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		pol := New(false, []Pattern{p})
		name := rel[strings.LastIndexByte(rel, '/')+1:]
		if !strings.Contains(pattern, "/") {
			want, _ := path.Match(pattern, name)
			if got := newMatcher(pattern).match(name); got != want {
				t.Errorf("matcher(%q).match(%q) = %v, path.Match says %v", pattern, name, got, want)
			}
		}
		if pol.Hidden(rel, name, isDir) && p.dirOnly && !isDir {
			t.Errorf("directory-only pattern %q hid a file %q", pattern, rel)
		}
	})
}
