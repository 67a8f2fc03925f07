package pdpbench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The comparison runs each engine in interleaved rounds (the order rotates
// every round), so that a burst of load from elsewhere on the machine
// lands on every engine alike, and times every call.

var sizes = []int{10, 100, 1_000, 10_000, 100_000}

const (
	rounds      = 8
	batchBudget = 150 * time.Millisecond // per engine per round
	sampleSize  = 4096                   // distinct requests cycled through
)

type engineName string

const (
	engBulkhead engineName = "Bulkhead (indexed)"
	engCedar    engineName = "cedar-go (Authorize)"
	engOPA      engineName = "OPA (Rego)"
	// engWarm is Bulkhead again, asked only about 8 agents, whose data
	// stays in cache: the index's own cost, without the memory misses
	// that a large fleet's random traffic costs.
	engWarm engineName = "Bulkhead, 8 agents"
)

var engineOrder = []engineName{engBulkhead, engCedar, engOPA, engWarm}

// stats summarizes one engine at one size, in nanoseconds.
type stats struct {
	n                   int
	p50, p90, p99, mean float64
}

type sizeResult struct {
	policies   int
	byEngine   map[engineName]stats
	loadBefore string
	loadAfter  string
	buildTime  time.Duration
}

func TestPDPComparison(t *testing.T) {
	mode := os.Getenv("BULKHEAD_PDPBENCH")
	if mode == "" {
		t.Skip("set BULKHEAD_PDPBENCH=run (or =write, to update docs/benchmarks.md) to run the comparison")
	}
	overhead := timerOverhead()
	started := time.Now()
	var results []sizeResult
	run := sizes
	if v := os.Getenv("BULKHEAD_PDPBENCH_SIZES"); v != "" && mode != "write" {
		run = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("BULKHEAD_PDPBENCH_SIZES: %v", err)
			}
			run = append(run, n)
		}
	}
	for _, n := range run {
		res := sizeResult{policies: n, byEngine: map[engineName]stats{}, loadBefore: loadavg()}
		t0 := time.Now()
		e := build(t, n)
		res.buildTime = time.Since(t0)
		reqs := sample(n, sampleSize, 3)
		// Only engines that agree are worth timing: every sampled request
		// for Bulkhead and OPA, the first 256 for cedar-go (at 100,000
		// policies it takes tens of milliseconds a request).
		for i := range reqs {
			q := &reqs[i]
			want := q.expected()
			if b, o := e.bulkhead(q), e.rego(q); b != want || o != want {
				t.Fatalf("n=%d: engines disagree on request %d: bulkhead %v, OPA %v, want %v", n, i, b, o, want)
			}
			if i < 256 {
				if c := e.raw(q); c != want {
					t.Fatalf("n=%d: cedar-go decides request %d %v, want %v", n, i, c, want)
				}
			}
		}
		warm := sample(min(n, 8), sampleSize, 4)
		fns := map[engineName]func(*request) bool{engBulkhead: e.bulkhead, engCedar: e.raw, engOPA: e.rego, engWarm: e.bulkhead}
		samples := map[engineName][]time.Duration{}
		next := map[engineName]int{}
		for r := 0; r < rounds; r++ {
			for k := range engineOrder {
				name := engineOrder[(r+k)%len(engineOrder)]
				qs := reqs
				if name == engWarm {
					qs = warm
				}
				samples[name] = measure(fns[name], qs, &next, name, samples[name])
			}
		}
		for name, s := range samples {
			res.byEngine[name] = summarize(s)
		}
		res.loadAfter = loadavg()
		t.Logf("%7d policies (built in %s, load %s → %s):", n, res.buildTime.Round(time.Millisecond), res.loadBefore, res.loadAfter)
		for _, name := range engineOrder {
			s := res.byEngine[name]
			t.Logf("    %-22s p50 %9s  p90 %9s  p99 %9s  (%d calls)", name, us(s.p50), us(s.p90), us(s.p99), s.n)
		}
		results = append(results, res)
		e = nil
		runtime.GC()
	}
	rep := report{results: results, overhead: overhead, started: started, took: time.Since(started)}
	for _, c := range rep.checks() {
		t.Logf("target: %s: %s", c.name, c.verdict())
	}
	if mode == "write" {
		if err := rep.write("../../../docs"); err != nil {
			t.Fatal(err)
		}
		t.Log("wrote docs/benchmarks.md and docs/benchmarks/pdp-latency.svg")
	}
}

// measure times calls of fn over reqs for about batchBudget, each call on
// its own, continuing through reqs where the last batch stopped.
func measure(fn func(*request) bool, reqs []request, next *map[engineName]int, name engineName, into []time.Duration) []time.Duration {
	// Each batch starts from a collected heap, as testing.B does, so that
	// one engine's garbage is not another's GC time.
	runtime.GC()
	i := (*next)[name]
	// A few calls to size the batch (and warm the caches as a caller
	// would find them: the engine was in use).
	t0 := time.Now()
	for k := 0; k < 5; k++ {
		fn(&reqs[i%len(reqs)])
		i++
	}
	per := time.Since(t0) / 5
	batch := int(batchBudget / max(per, time.Nanosecond))
	batch = min(max(batch, 8), 50_000)
	for k := 0; k < batch; k++ {
		q := &reqs[i%len(reqs)]
		s := time.Now()
		fn(q)
		into = append(into, time.Since(s))
		i++
	}
	(*next)[name] = i
	return into
}

func summarize(d []time.Duration) stats {
	slices.Sort(d)
	pct := func(p float64) float64 { return float64(d[min(int(p*float64(len(d))), len(d)-1)]) }
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return stats{n: len(d), p50: pct(0.50), p90: pct(0.90), p99: pct(0.99), mean: float64(sum) / float64(len(d))}
}

// timerOverhead is what timing one call adds to it (two clock reads).
func timerOverhead() time.Duration {
	var d []time.Duration
	for i := 0; i < 100_000; i++ {
		s := time.Now()
		d = append(d, time.Since(s))
	}
	return time.Duration(summarize(d).p50)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func us(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.1f ms", ns/1e6)
	case ns >= 100e3:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	case ns >= 10e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.2f µs", ns/1e3)
}
