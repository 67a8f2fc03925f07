package report

import (
	"strings"
	"testing"
)

const sample = `goos: linux
pkg: github.com/bulkhead-dev/bulkhead/internal/gateway/gwbench
cpu: Test CPU
BenchmarkGatewayLayers/direct/conns=1-2         	    6787	    328773 ns/op	       183.0 p50-µs
BenchmarkGatewayLayers/proxy/conns=1-2          	    5277	    657546 ns/op	       281.0 p50-µs
BenchmarkGatewayLayers/direct/conns=16-2        	   13557	    215765 ns/op
BenchmarkGatewayLayers/proxy/conns=16-2         	    6014	    431530 ns/op
BenchmarkAlone-2	100	50 ns/op	8 B/op	1 allocs/op
PASS
`

func TestParseGroupsCasesBesideTheirBaseline(t *testing.T) {
	run, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if run.CPU != "Test CPU" || len(run.Groups) != 3 {
		t.Fatalf("run = %+v", run)
	}
	g := run.Groups[0]
	if g.Name != "GatewayLayers/conns=1" || len(g.Cases) != 2 || g.Cases[0].Name != "direct" || g.Units[1] != "p50-µs" {
		t.Fatalf("group = %+v", g)
	}
	if r := g.Ratio(g.Cases[1]); r != 0.5 {
		t.Fatalf("ratio = %v, want 0.5", r)
	}
	md := g.Markdown()
	for _, want := range []string{"| proxy | 657546 | 281 | 0.50 |", "baseline: direct", "GatewayLayers_conns-1.svg"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if svg := g.SVG(); !strings.Contains(svg, "<svg") || !strings.Contains(svg, "×0.50") {
		t.Fatalf("svg:\n%s", svg)
	}
	if a := run.Groups[2]; a.Name != "Alone" || a.Cases[0].Metrics["allocs/op"] != 1 {
		t.Fatalf("a benchmark without sub-benchmarks: %+v", a)
	}
}

func TestParseRefusesUnpairedValues(t *testing.T) {
	if _, err := Parse(strings.NewReader("BenchmarkX-2 10 5 ns/op 7\n")); err == nil {
		t.Fatal("an unpaired value was accepted")
	}
}

// A parameter only some cases have does not split the comparison.
func TestAParameterSomeCasesLackStaysInTheCaseName(t *testing.T) {
	run, err := Parse(strings.NewReader(`BenchmarkAppend/tx-per-event/sqlite-2 10 400 ns/op
BenchmarkAppend/group-commit/sqlite/callers=64-2 10 100 ns/op
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Groups) != 1 || run.Groups[0].Cases[1].Name != "group-commit/sqlite/callers=64" || run.Groups[0].Ratio(run.Groups[0].Cases[1]) != 4 {
		t.Fatalf("groups = %+v", run.Groups[0])
	}
}
