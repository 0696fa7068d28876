package policy

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// file is the TOML form of a policy file.
type file struct {
	ReadOnly     bool      `toml:"read_only"`
	Hide         []Pattern `toml:"hide"`
	EntryTimeout *duration `toml:"entry_timeout"` // nil: not in the file
	AttrTimeout  *duration `toml:"attr_timeout"`
	LogLevel     level     `toml:"log_level"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration like \"1s\" or \"250ms\"", b)
	}
	d.Duration = v
	return nil
}

// value is the duration set in the file, nil if none: "0s" is a setting
// (no caching), not the lack of one.
func (d *duration) value() *time.Duration {
	if d == nil {
		return nil
	}
	v := d.Duration
	return &v
}

type level struct{ slog.Level }

func (l *level) UnmarshalText(b []byte) error {
	if err := l.Level.UnmarshalText(b); err != nil {
		return fmt.Errorf("%q is not a log level (debug, info, warn, error)", b)
	}
	return nil
}

// Load reads (see ReadFile) and decodes a policy file strictly: an unknown
// key, a wrong type or a bad pattern is an error naming the file, the line
// and the key. A file without a single setting is refused too: it is what
// an editor's save leaves for a moment, and as a policy it would lift
// read_only and every hide. To mean the defaults, say so: read_only = false.
func Load(name string) (*Policy, error) {
	b, err := ReadFile(name)
	if err != nil {
		return nil, err
	}
	if blank(b) {
		return nil, fmt.Errorf("policy %s: has no setting (empty, or only comments); write read_only = false for the defaults", name)
	}
	return Decode(name, b)
}

// Decode decodes the policy file called name, whose contents are b.
func Decode(name string, b []byte) (*Policy, error) {
	if err := checkValues(name, b); err != nil {
		return nil, err
	}
	var f file
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, decodeError(name, b, err)
	}
	p := &Policy{ReadOnly: f.ReadOnly, Hide: f.Hide, EntryTimeout: f.EntryTimeout.value(),
		AttrTimeout: f.AttrTimeout.value(), LogLevel: f.LogLevel.Level}
	p.index()
	return p, nil
}

// decodeError turns go-toml's errors into "FILE:LINE: key K: what".
func decodeError(name string, src []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		var lines []string
		for i := range strict.Errors {
			lines = append(lines, located(name, src, &strict.Errors[i], "unknown key; expected one of "+knownKeys()))
		}
		return errors.New(strings.Join(lines, "; "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		return errors.New(located(name, src, de, ""))
	}
	return fmt.Errorf("%s: %w", name, err)
}

func located(name string, src []byte, de *toml.DecodeError, what string) string {
	row, _ := de.Position()
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	if what != "" {
		msg = what
	}
	key := strings.Join(de.Key(), ".")
	if key == "" {
		key = keyOnLine(src, row) // a syntax error: the parser knows no key yet
	}
	if strings.Contains(msg, "already defined") {
		msg = "set a second time; expected each key once"
	} else if s, ok := settings[key]; ok && what == "" {
		// A syntax error in a known key's value, or in one of its elements.
		expected := s.expected
		if s.element != "" && strings.HasPrefix(msg, "pattern ") {
			expected = s.element
		}
		msg += "; expected " + expected
	}
	if key != "" {
		return fmt.Sprintf("%s:%d: key %q: %s", name, row, key, msg)
	}
	return fmt.Sprintf("%s:%d: %s", name, row, msg)
}

// keyOnLine is the key of a "key = value" line, or "".
func keyOnLine(src []byte, row int) string {
	lines := strings.Split(string(src), "\n")
	if row < 1 || row > len(lines) {
		return ""
	}
	key, _, ok := strings.Cut(lines[row-1], "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" || strings.ContainsAny(key, "[]\"' ") {
		return ""
	}
	return key
}
