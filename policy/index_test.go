package policy

import (
	"fmt"
	"path"
	"strings"
	"testing"
)

// hiddenByLoop is Hidden the plain way: every pattern, one by one.
func hiddenByLoop(p *Policy, rel, name string, isDir bool) bool {
	for _, h := range p.Hide {
		if h.dirOnly && !isDir {
			continue
		}
		if ok, _ := path.Match(h.glob[strings.LastIndexByte(h.glob, '/')+1:], name); !ok {
			continue
		}
		if !h.anchored {
			return true
		}
		if ok, _ := path.Match(h.glob, rel); ok {
			return true
		}
	}
	return false
}

var indexCases = []string{"secret", "*.key", "*", ".*", "pre*", "*fix", "a*b", "[a-c]?", `a\*b`, "x/cache/",
	"etc/*.conf", "/top", "a/*/c", "cache/", "*.tar.gz", "id_*", "?"}

func TestIndexAgreesWithTheLoop(t *testing.T) {
	names := []string{"secret", "a.key", "key", ".env", "prefix", "fix", "ab", "a*b", "b1", "cache", "top",
		"x.tar.gz", "id_rsa", "a", "", "pre", "c", "etc", "xcache"}
	for i := range indexCases {
		for j := i; j <= len(indexCases); j++ {
			p := New(false, mustPatterns(t, indexCases[i:j]...))
			for _, name := range names {
				for _, rel := range []string{name, "a/b/" + name, "etc/" + name, "x/" + name} {
					for _, isDir := range []bool{false, true} {
						if got, want := p.Hidden(rel, name, isDir), hiddenByLoop(p, rel, name, isDir); got != want {
							t.Errorf("patterns %q, %q (dir %v): index %v, loop %v", indexCases[i:j], rel, isDir, got, want)
						}
					}
				}
			}
		}
	}
}

func FuzzIndex(f *testing.F) {
	f.Add("*.key,pre*,secret,a/*/c", "a/b/c", false)
	f.Add("*,x*y,cache/", "cache", true)
	f.Fuzz(func(t *testing.T, patterns, rel string, isDir bool) {
		var hide []Pattern
		for _, s := range strings.Split(patterns, ",") {
			if p, err := ParsePattern(s); err == nil {
				hide = append(hide, p)
			}
		}
		p := New(false, hide)
		name := rel[strings.LastIndexByte(rel, '/')+1:]
		if got, want := p.Hidden(rel, name, isDir), hiddenByLoop(p, rel, name, isDir); got != want {
			t.Errorf("patterns %q, %q (dir %v): index %v, loop %v", patterns, rel, isDir, got, want)
		}
	})
}

// manyPatterns is n hide patterns of the usual shapes.
func manyPatterns(t testing.TB, n int) *Policy {
	hide := make([]Pattern, 0, n)
	for i := 0; len(hide) < n; i++ {
		for _, s := range []string{"secret%d", "*.k%d", "tmp%d*", "d%d/x"} {
			p, err := ParsePattern(fmt.Sprintf(s, i))
			if err != nil {
				t.Fatal(err)
			}
			hide = append(hide, p)
		}
	}
	return New(true, hide[:n])
}

// TestIndexTriesFewPatterns counts the patterns tried for a name: with
// 100,000 of them, a name that none hides tries none, and one that a
// pattern hides tries at most one per prefix or suffix it has.
func TestIndexTriesFewPatterns(t *testing.T) {
	p := manyPatterns(t, 100_000)
	for name, most := range map[string]int{"README.md": 0, "secret77": 1, "a.k5": 1, "tmp12345": 5, "x": 1} {
		tried := 0
		p.idx.any(name, func() string { return "d1/" + name }, func(*Pattern) bool { tried++; return false })
		if tried > most {
			t.Errorf("%q: %d patterns tried, want at most %d", name, tried, most)
		}
	}
	if !p.Hidden("secret77", "secret77", false) || !p.Hidden("d9/x", "x", false) || p.Hidden("d9/y/x", "x", false) {
		t.Error("the 100,000-pattern policy hides the wrong names")
	}
}

func benchmarkHidden(b *testing.B, n int) {
	p := manyPatterns(b, n)
	names := []string{"README.md", "main.go", "secret77", "notes.txt", "x"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := names[i%len(names)]
		p.Hidden("a/"+name, name, false)
	}
}

func BenchmarkHidden1(b *testing.B)      { benchmarkHidden(b, 1) }
func BenchmarkHidden100000(b *testing.B) { benchmarkHidden(b, 100_000) }
