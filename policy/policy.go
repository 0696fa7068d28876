// Package policy is what the mirror shows and allows: read-only or not, the
// names it hides, its cache timeouts. A Policy is immutable; a reload builds
// a new one and swaps it in whole.
package policy

import (
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"
)

// Policy is one decoded policy file.
type Policy struct {
	ReadOnly     bool
	Hide         []Pattern
	EntryTimeout *time.Duration // nil: DefaultTimeout; 0: no caching
	AttrTimeout  *time.Duration // nil: DefaultTimeout; 0: no caching
	LogLevel     slog.Level

	anchored bool   // some pattern contains "/": matching needs the path
	idx      *index // the patterns by the shape of their last component
}

// DefaultTimeout is how long the kernel may keep a name or attributes
// when the policy does not say.
const DefaultTimeout = time.Second

// EntryTTL is how long the kernel may keep a name it looked up: the
// policy's entry_timeout, where "0s" means not at all, or DefaultTimeout.
func (p *Policy) EntryTTL() time.Duration { return orDefault(p.EntryTimeout) }

// AttrTTL is how long the kernel may keep attributes, as EntryTTL.
func (p *Policy) AttrTTL() time.Duration { return orDefault(p.AttrTimeout) }

func orDefault(d *time.Duration) time.Duration {
	if d == nil {
		return DefaultTimeout
	}
	return *d
}

// Default is the policy without a file: everything visible and writable.
var Default = &Policy{}

// Pattern is one hide pattern, in path.Match syntax.
//
//   - without "/", it matches an entry's name at any depth: "*.key";
//   - with "/", it matches the path from the mirror's root: "etc/secret"
//     ("/etc/secret" is the same);
//   - a trailing "/" restricts it to directories: "cache/".
type Pattern struct {
	glob     string
	anchored bool
	dirOnly  bool
	name     matcher // the name (unanchored) or the last component (anchored)
}

// matcher matches one glob, taking the fast road for the common shapes:
// a literal name, "*suffix" and "prefix*".
type matcher struct {
	kind int // literal, suffix, prefix or glob
	lit  string
	glob string
}

const (
	matchLiteral = iota
	matchSuffix
	matchPrefix
	matchGlob
)

// meta are the characters that make a pattern a glob.
const meta = `*?[\`

func newMatcher(glob string) matcher {
	switch {
	case !strings.ContainsAny(glob, meta):
		return matcher{kind: matchLiteral, lit: glob}
	case strings.HasPrefix(glob, "*") && !strings.ContainsAny(glob[1:], meta):
		return matcher{kind: matchSuffix, lit: glob[1:]}
	case strings.HasSuffix(glob, "*") && !strings.ContainsAny(glob[:len(glob)-1], meta):
		return matcher{kind: matchPrefix, lit: glob[:len(glob)-1]}
	}
	return matcher{kind: matchGlob, glob: glob}
}

func (m matcher) match(s string) bool {
	switch m.kind {
	case matchLiteral:
		return s == m.lit
	case matchSuffix:
		return strings.HasSuffix(s, m.lit)
	case matchPrefix:
		return strings.HasPrefix(s, m.lit)
	}
	ok, _ := path.Match(m.glob, s)
	return ok
}

// ParsePattern checks and parses a hide pattern.
func ParsePattern(s string) (Pattern, error) {
	p := Pattern{glob: s}
	if strings.HasSuffix(p.glob, "/") {
		p.glob, p.dirOnly = strings.TrimRight(p.glob, "/"), true
	}
	if strings.Contains(p.glob, "/") {
		p.glob, p.anchored = strings.TrimLeft(path.Clean(p.glob), "/"), true
	}
	if p.glob == "" || p.glob == "." || p.glob == ".." || strings.HasPrefix(p.glob, "../") {
		return Pattern{}, fmt.Errorf("pattern %q matches nothing in the mirror", s)
	}
	if _, err := path.Match(p.glob, ""); err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: %w", s, err)
	}
	p.name = newMatcher(p.glob[strings.LastIndexByte(p.glob, '/')+1:])
	return p, nil
}

// String is the pattern as written (normalised).
func (p Pattern) String() string {
	s := p.glob
	if p.anchored && !strings.Contains(s, "/") {
		s = "/" + s
	}
	if p.dirOnly {
		s += "/"
	}
	return s
}

// UnmarshalText lets the TOML decoder check a pattern where it stands.
func (p *Pattern) UnmarshalText(b []byte) error {
	parsed, err := ParsePattern(string(b))
	if err != nil {
		return err
	}
	*p = parsed
	return nil
}

// New builds a policy; it is how decoded files and tests make one.
func New(readOnly bool, hide []Pattern) *Policy {
	p := &Policy{ReadOnly: readOnly, Hide: hide}
	p.index()
	return p
}

func (p *Policy) index() {
	p.idx = newIndex(p.Hide)
	for _, h := range p.Hide {
		p.anchored = p.anchored || h.anchored
	}
}

// NeedsPath says whether Hidden needs the entry's path, not only its name.
func (p *Policy) NeedsPath() bool { return p.anchored }

// Hides says whether any name is hidden at all.
func (p *Policy) Hides() bool { return len(p.Hide) > 0 }

// Hidden says whether the entry called name, at rel (its path from the
// mirror's root, without a leading "/"; only needed when NeedsPath), is
// hidden. isDir is whether it is a directory.
func (p *Policy) Hidden(rel, name string, isDir bool) bool {
	return p.HiddenLazy(name, isDir, func() string { return rel })
}

// HiddenLazy is Hidden for callers whose path costs something to build: rel
// is called only when an anchored pattern's last component matches name.
// Only the patterns whose last component can match name are tried (see
// index), so a check costs about len(name), not len(p.Hide).
func (p *Policy) HiddenLazy(name string, isDir bool, rel func() string) bool {
	if p.idx == nil {
		return false // Default, or a Policy built without New
	}
	return p.idx.any(name, rel, func(h *Pattern) bool {
		if h.dirOnly && !isDir || !h.name.match(name) {
			return false
		}
		if !h.anchored {
			return true
		}
		ok, _ := path.Match(h.glob, rel())
		return ok
	})
}

// CoversBelow says whether an anchored pattern could hide something below
// rel: whether rel matches the leading components of such a pattern. Renaming
// rel would move that hidden entry to a path the pattern does not name.
func (p *Policy) CoversBelow(rel string) bool {
	if !p.anchored || rel == "" {
		return false
	}
	depth := strings.Count(rel, "/") + 1
	for _, h := range p.Hide { // only on renames: a plain loop will do
		parts := strings.Split(h.glob, "/")
		if !h.anchored || len(parts) <= depth {
			continue
		}
		if ok, _ := path.Match(strings.Join(parts[:depth], "/"), rel); ok {
			return true
		}
	}
	return false
}
