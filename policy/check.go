package policy

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// A decode error says where, which key, what is wrong and what is
// expected: "FILE:LINE: key "K": 5 is not a duration; expected a string
// like "1s"". go-toml's own messages name Go types and lose the line of a
// value its UnmarshalText refuses, so every key's value is checked here,
// on the file as plain TOML, before the strict decode into the policy.

// setting is what one key of a policy file takes.
type setting struct {
	expected string                  // what the key takes, for the message
	problem  func(v any) (is string) // "" if v is right, else what v is not
	element  string                  // what one element takes, if the key takes a list
}

var settings = map[string]setting{
	"read_only":     {"true or false", isBool, ""},
	"hide":          {`an array of patterns like ["*.tmp", ".git"]`, isPatterns, `a glob pattern (*, ?, [a-z], \ to escape)`},
	"entry_timeout": {`a string like "1s" or "250ms"`, isDuration, ""},
	"attr_timeout":  {`a string like "1s" or "250ms"`, isDuration, ""},
	"log_level":     {`one of "debug", "info", "warn", "error"`, isLevel, ""},
}

func knownKeys() string {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// checkValues checks the type and form of each known key's value in the
// file src, which parses as TOML; unknown keys are the strict decoder's.
func checkValues(name string, src []byte) error {
	var m map[string]any
	if err := toml.Unmarshal(src, &m); err != nil {
		return nil // a syntax error: the strict decode reports it, with its line
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return lineOf(src, a) - lineOf(src, b) })
	for _, k := range keys {
		s, ok := settings[k]
		if !ok {
			continue
		}
		if is := s.problem(m[k]); is != "" {
			return fmt.Errorf("%s:%d: key %q: %s is not %s; expected %s", name, lineOf(src, k), k, show(m[k]), is, s.expected)
		}
	}
	return nil
}

// lineOf is the line of the first "key = ..." or "[key]" line for key.
func lineOf(src []byte, key string) int {
	for i, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if keyOnLine(src, i+1) == key || line == "["+key+"]" || line == "[["+key+"]]" {
			return i + 1
		}
	}
	return 0
}

// show renders a TOML value as the file would write it, briefly.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprint(v)
}

func isBool(v any) string {
	if _, ok := v.(bool); ok {
		return ""
	}
	return "a boolean"
}

func isPatterns(v any) string {
	list, ok := v.([]any)
	if !ok {
		return "an array of patterns"
	}
	for _, e := range list {
		if _, ok := e.(string); !ok {
			return fmt.Sprintf("an array of strings (it holds %s)", show(e))
		}
	}
	return ""
}

func isDuration(v any) string {
	s, ok := v.(string)
	if !ok {
		return "a duration"
	}
	if d, err := time.ParseDuration(s); err != nil || d < 0 {
		return "a duration of 0 or more"
	}
	return ""
}

func isLevel(v any) string {
	var l slog.Level
	if s, ok := v.(string); !ok || l.UnmarshalText([]byte(s)) != nil {
		return "a log level"
	}
	return ""
}
