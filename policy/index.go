package policy

import (
	"sort"
	"strings"
)

// index finds the hide patterns whose last component may match a name
// without trying every pattern: with 100,000 patterns a listing would
// otherwise cost 100,000 matches per entry. Literal names are found in a
// map; "*suffix" and "prefix*" by looking up the name's suffixes and
// prefixes of the lengths that occur (at most len(name)+1 look-ups each);
// anchored literal paths ("etc/secret") by the whole path; only the other
// globs are tried one by one.
type index struct {
	patterns   []Pattern
	paths      map[string][]int32 // anchored patterns without a glob, by path
	pathNames  map[string]bool    // the last components of those paths
	literal    map[string][]int32
	suffix     map[string][]int32
	prefix     map[string][]int32
	suffixLens []int // the distinct lengths of the suffixes, ascending
	prefixLens []int
	globs      []int32
}

func newIndex(hide []Pattern) *index {
	x := &index{patterns: hide, paths: map[string][]int32{}, pathNames: map[string]bool{},
		literal: map[string][]int32{}, suffix: map[string][]int32{}, prefix: map[string][]int32{}}
	for i, h := range hide {
		n := int32(i)
		switch m := h.name; {
		case h.anchored && !strings.ContainsAny(h.glob, meta):
			x.paths[h.glob] = append(x.paths[h.glob], n)
			x.pathNames[m.lit] = true
		case m.kind == matchLiteral:
			x.literal[m.lit] = append(x.literal[m.lit], n)
		case m.kind == matchSuffix:
			x.suffix[m.lit] = append(x.suffix[m.lit], n)
		case m.kind == matchPrefix:
			x.prefix[m.lit] = append(x.prefix[m.lit], n)
		default:
			x.globs = append(x.globs, n)
		}
	}
	x.suffixLens = lengths(x.suffix)
	x.prefixLens = lengths(x.prefix)
	return x
}

func lengths(m map[string][]int32) []int {
	seen := map[int]bool{}
	var ls []int
	for k := range m {
		if !seen[len(k)] {
			seen[len(k)] = true
			ls = append(ls, len(k))
		}
	}
	sort.Ints(ls)
	return ls
}

// any calls try with each pattern that may hide the entry called name at
// rel (called only for an anchored literal path ending in name), until one
// call returns true; it reports whether one did.
func (x *index) any(name string, rel func() string, try func(*Pattern) bool) bool {
	if x.tryAll(x.literal[name], try) {
		return true
	}
	if x.pathNames[name] && x.tryAll(x.paths[rel()], try) {
		return true
	}
	for _, l := range x.suffixLens {
		if l > len(name) {
			break
		}
		if x.tryAll(x.suffix[name[len(name)-l:]], try) {
			return true
		}
	}
	for _, l := range x.prefixLens {
		if l > len(name) {
			break
		}
		if x.tryAll(x.prefix[name[:l]], try) {
			return true
		}
	}
	return x.tryAll(x.globs, try)
}

func (x *index) tryAll(which []int32, try func(*Pattern) bool) bool {
	for _, i := range which {
		if try(&x.patterns[i]) {
			return true
		}
	}
	return false
}
