package pdpbench

import (
	"testing"
	"time"
	"runtime"
)

func TestExpAlone(t *testing.T) {
	for _, n := range []int{10, 100000} {
		e := build(t, n)
		e.cedar = nil; e.ents = nil
		runtime.GC()
		reqs := sample(n, sampleSize, 3)
		next := map[engineName]int{}
		var s []time.Duration
		for r := 0; r < 12; r++ { s = measure(e.bulkhead, reqs, &next, engBulkhead, s) }
		st := summarize(s)
		t.Logf("n=%d p50 %s p90 %s p99 %s load %s", n, us(st.p50), us(st.p90), us(st.p99), loadavg())
	}
}
