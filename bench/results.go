package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// metric is one row of the table.
type metric struct {
	name, unit  string
	lowerBetter bool
	values      map[string][]float64 // by target
}

type results struct {
	order  []string
	rows   map[string]*metric
	failed map[string][]string // by target: what went wrong, in order
}

func newResults() *results {
	return &results{rows: map[string]*metric{}, failed: map[string][]string{}}
}

// fail notes what went wrong on a target; the run goes on without it.
func (r *results) fail(target string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", target, err)
	r.failed[target] = append(r.failed[target], err.Error())
}

func (r *results) add(name, unit string, lowerBetter bool, target string, v float64) {
	m, ok := r.rows[name]
	if !ok {
		m = &metric{name: name, unit: unit, lowerBetter: lowerBetter, values: map[string][]float64{}}
		r.rows[name] = m
		r.order = append(r.order, name)
	}
	m.values[target] = append(m.values[target], v)
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratio is how much better v is than ref: above 1 is better, whichever way
// the metric goes.
func (m *metric) ratio(target, ref string) string {
	v, r := m.values[target], m.values[ref]
	if len(v) == 0 || len(r) == 0 || median(v) == 0 || median(r) == 0 {
		return "–"
	}
	x := median(v) / median(r)
	if m.lowerBetter {
		x = 1 / x
	}
	return fmt.Sprintf("%.2f×", x)
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func (r *results) markdown(targets []string, machine string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mirrorfs bench, %s. Median (min–max) of the rounds; then the ratio to the plain\n", machine)
	fmt.Fprintf(&b, "directory and to bindfs, where above 1× is better (faster, smaller) whichever way the unit goes.\n\n")
	fmt.Fprintf(&b, "| workload | unit |")
	for _, t := range targets {
		fmt.Fprintf(&b, " %s |", t)
	}
	fmt.Fprintf(&b, "\n|---|---|%s\n", strings.Repeat("---|", len(targets)))
	for _, name := range r.order {
		m := r.rows[name]
		dir := "↑"
		if m.lowerBetter {
			dir = "↓"
		}
		fmt.Fprintf(&b, "| %s | %s %s |", name, m.unit, dir)
		for _, t := range targets {
			vs := m.values[t]
			if len(vs) == 0 {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(&b, " %s (%s–%s)", num(median(vs)), num(slices.Min(vs)), num(slices.Max(vs)))
			if t != "plain" && len(m.values["plain"]) > 0 {
				fmt.Fprintf(&b, " %s plain", m.ratio(t, "plain"))
			}
			if t != "bindfs" && t != "plain" {
				fmt.Fprintf(&b, ", %s bindfs", m.ratio(t, "bindfs"))
			}
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	for _, t := range targets {
		if errs := r.failed[t]; len(errs) > 0 {
			fmt.Fprintf(&b, "\n%s: %d failure(s), its figures missing there; the first: %s\n", t, len(errs), firstLine(errs[0]))
		}
	}
	return b.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
