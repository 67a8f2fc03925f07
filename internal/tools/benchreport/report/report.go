// Package report parses `go test -bench` output into groups of cases
// compared with a baseline, and renders them as Markdown and SVG.
package report

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Run is one benchmark run.
type Run struct {
	CPU    string
	Groups []*Group
}

// Group is cases measured side by side; the first is the baseline.
type Group struct {
	Name  string // e.g. "GatewayLayers/conns=16"
	Pkg   string
	Cases []Case
	// Units lists the metrics in the order first seen (ns/op first).
	Units []string
}

// Case is one benchmark's result.
type Case struct {
	Name    string
	N       int64
	Metrics map[string]float64 // unit → value
}

var line = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

// Parse reads go test -bench output. Lines it does not know are skipped.
//
// A benchmark function is one comparison: its sub-benchmarks are its cases
// and the first is the baseline. A parameter (a "key=value" level) that
// every case has splits it into one group per value, so that the cases
// at conns=16 are compared with the baseline at conns=16.
func Parse(r io.Reader) (*Run, error) {
	type entry struct {
		pkg, top string
		path     []string
		c        Case
		units    []string
	}
	var (
		entries []entry
		run     = &Run{}
		pkg     string
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(text, "pkg: "):
			pkg = strings.TrimPrefix(text, "pkg: ")
			continue
		case strings.HasPrefix(text, "cpu: "):
			run.CPU = strings.TrimSpace(strings.TrimPrefix(text, "cpu: "))
			continue
		}
		m := line.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(m[2], 10, 64)
		fields := strings.Fields(m[3])
		if len(fields)%2 != 0 {
			return nil, fmt.Errorf("report: %q: values and units do not pair", text)
		}
		e := entry{pkg: pkg, c: Case{N: n, Metrics: map[string]float64{}}}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("report: %q: %w", text, err)
			}
			e.c.Metrics[fields[i+1]] = v
			e.units = append(e.units, fields[i+1])
		}
		parts := strings.Split(m[1], "/")
		e.top, e.path = parts[0], parts[1:]
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// The parameters every case of a benchmark has.
	shared := map[string]map[string]bool{}
	for _, e := range entries {
		k := e.pkg + " " + e.top
		keys := map[string]bool{}
		for _, p := range e.path {
			if key, _, ok := strings.Cut(p, "="); ok {
				keys[key] = true
			}
		}
		if prev, ok := shared[k]; ok {
			for key := range prev {
				if !keys[key] {
					delete(prev, key)
				}
			}
		} else {
			shared[k] = keys
		}
	}
	groups := map[string]*Group{}
	for _, e := range entries {
		name, cs := []string{e.top}, []string{}
		for _, p := range e.path {
			if key, _, ok := strings.Cut(p, "="); ok && shared[e.pkg+" "+e.top][key] {
				name = append(name, p)
			} else {
				cs = append(cs, p)
			}
		}
		e.c.Name = strings.Join(cs, "/")
		if e.c.Name == "" {
			e.c.Name = e.top
		}
		key := e.pkg + " " + strings.Join(name, "/")
		g := groups[key]
		if g == nil {
			g = &Group{Name: strings.Join(name, "/"), Pkg: e.pkg}
			groups[key] = g
			run.Groups = append(run.Groups, g)
		}
		for _, u := range e.units {
			if !contains(g.Units, u) {
				g.Units = append(g.Units, u)
			}
		}
		g.Cases = append(g.Cases, e.c)
	}
	return run, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// File is a file name for the group.
func (g *Group) File() string {
	return strings.NewReplacer("/", "_", "=", "-", " ", "_").Replace(g.Name)
}

// Ratio is the baseline's ns/op over the case's: the case's throughput as
// a fraction of the baseline's (1 for the baseline itself).
func (g *Group) Ratio(c Case) float64 {
	base, v := g.Cases[0].Metrics["ns/op"], c.Metrics["ns/op"]
	if base == 0 || v == 0 {
		return 0
	}
	return base / v
}

// Markdown is the group's table.
func (g *Group) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n`%s`; baseline: %s. \"vs baseline\" is the baseline's time per operation over the case's (throughput ratio).\n\n", g.Name, g.Pkg, g.Cases[0].Name)
	b.WriteString("| case |")
	for _, u := range g.Units {
		fmt.Fprintf(&b, " %s |", u)
	}
	b.WriteString(" vs baseline |\n|---|")
	for range g.Units {
		b.WriteString("---:|")
	}
	b.WriteString("---:|\n")
	for _, c := range g.Cases {
		fmt.Fprintf(&b, "| %s |", c.Name)
		for _, u := range g.Units {
			if v, ok := c.Metrics[u]; ok {
				fmt.Fprintf(&b, " %s |", strconv.FormatFloat(v, 'f', -1, 64))
			} else {
				b.WriteString(" — |")
			}
		}
		fmt.Fprintf(&b, " %.2f |\n", g.Ratio(c))
	}
	fmt.Fprintf(&b, "\n![%s](%s.svg)\n", g.Name, g.File())
	return b.String()
}

// SVG is a horizontal bar chart of time per operation, the baseline first.
func (g *Group) SVG() string {
	const (
		left, barH, gap, width = 320, 22, 8, 420
	)
	maxV := 0.0
	for _, c := range g.Cases {
		maxV = max(maxV, c.Metrics["ns/op"])
	}
	h := 40 + len(g.Cases)*(barH+gap) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+140, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">%s — time per operation (shorter is faster)</text>`+"\n", html.EscapeString(g.Name))
	for i, c := range g.Cases {
		y := 40 + i*(barH+gap)
		w := 0.0
		if maxV > 0 {
			w = c.Metrics["ns/op"] / maxV * width
		}
		fill := "#4a7bd0"
		if i == 0 {
			fill = "#888"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH-6, html.EscapeString(c.Name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, fill)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s ×%.2f</text>`+"\n", float64(left)+w+6, y+barH-6, human(c.Metrics["ns/op"]), g.Ratio(c))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func human(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}
