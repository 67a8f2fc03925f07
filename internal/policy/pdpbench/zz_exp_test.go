package pdpbench

import (
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func steal() string {
	b, _ := os.ReadFile("/proc/stat")
	return strings.SplitN(string(b), "\n", 2)[0]
}

func TestExpAlone(t *testing.T) {
	for _, n := range []int{10, 100000} {
		e := build(t, n)
		e.cedar = nil
		e.ents = nil
		runtime.GC()
		reqs := sample(n, sampleSize, 3)
		next := map[engineName]int{}
		var s []time.Duration
		st0 := steal()
		w0, c0 := time.Now(), cpuNow()
		for r := 0; r < 12; r++ {
			s = measure(e.bulkhead, reqs, &next, engBulkhead, s)
		}
		w1, c1 := time.Since(w0), cpuNow()-c0
		st := summarize(s)
		t.Logf("n=%d p50 %s p90 %s p99 %s calls %d wall %s cpu %s load %s\n%s\n%s", n, us(st.p50), us(st.p90), us(st.p99), len(s), w1, c1, loadavg(), st0, steal())
		// Loop without per-call timing.
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		w0, c0 = time.Now(), cpuNow()
		for i := 0; i < 200000; i++ {
			e.bulkhead(&reqs[i%len(reqs)])
		}
		wall, cpu := time.Since(w0)/200000, (cpuNow()-c0)/200000
		runtime.ReadMemStats(&m1)
		t.Logf("untimed: %s/call wall, %s/call cpu; %d GCs, heap %d MB, gc cpu fraction %.2f", wall, cpu, m1.NumGC-m0.NumGC, m1.HeapAlloc>>20, m1.GCCPUFraction)
		old := debug.SetGCPercent(-1)
		w0, c0 = time.Now(), cpuNow()
		for i := 0; i < 200000; i++ {
			e.bulkhead(&reqs[i%len(reqs)])
		}
		t.Logf("untimed, no GC: %s/call wall, %s/call cpu", time.Since(w0)/200000, (cpuNow()-c0)/200000)
		debug.SetGCPercent(old)
	}
}
