package policy

import (
	"strings"
	"testing"
)

// TestDecodeErrors: every bad file gets "FILE:LINE: key "K": what is
// wrong; expected what".
func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"read_only = true\n\nentry_timeout = 5\n", `x.toml:3: key "entry_timeout": 5 is not a duration; expected a string like "1s" or "250ms"`},
		{"read_only = \"yes\"\n", `x.toml:1: key "read_only": "yes" is not a boolean; expected true or false`},
		{"read_only = 1\n", `x.toml:1: key "read_only": 1 is not a boolean; expected true or false`},
		{"# c\nread_only = [true]\n", `x.toml:2: key "read_only": an array is not a boolean; expected true or false`},
		{"entry_timeout = \"5\"\n", `x.toml:1: key "entry_timeout": "5" is not a duration of 0 or more; expected a string like "1s"`},
		{"attr_timeout = \"-1s\"\n", `x.toml:1: key "attr_timeout": "-1s" is not a duration of 0 or more; expected a string like "1s"`},
		{"entry_timeout = true\n", `x.toml:1: key "entry_timeout": true is not a duration; expected a string like "1s"`},
		{"log_level = \"loud\"\n", `x.toml:1: key "log_level": "loud" is not a log level; expected one of "debug", "info", "warn", "error"`},
		{"\nlog_level = 3\n", `x.toml:2: key "log_level": 3 is not a log level; expected one of`},
		{"hide = \"x\"\n", `x.toml:1: key "hide": "x" is not an array of patterns; expected an array of patterns like ["*.tmp", ".git"]`},
		{"hide = [\"a\", 1]\n", `x.toml:1: key "hide": an array is not an array of strings (it holds 1); expected an array of patterns`},
		{"hide = ['[']\n", `x.toml:1: key "hide": pattern "[": syntax error in pattern; expected a glob pattern (*, ?, [a-z], \ to escape)`},
		{"read_only = true\nbogus = 1\n", `x.toml:2: key "bogus": unknown key; expected one of attr_timeout, entry_timeout, hide, log_level, read_only`},
		{"read_only = yes\n", `x.toml:1: key "read_only": unexpected character U+0079 'y' at start of value; expected true or false`},
		{"read_only = true\nread_only = false\n", `x.toml:2: key "read_only": set a second time; expected each key once`},
	} {
		_, err := Decode("x.toml", []byte(c.src))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Decode(%q) = %v\n want an error starting %s", c.src, err, c.want)
		}
	}
}
