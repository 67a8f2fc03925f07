package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

type keptRecorder struct {
	mu     sync.Mutex
	events []audit.Event
	added  chan audit.Event
}

func (r *keptRecorder) Record(_ context.Context, ev audit.Event) (audit.Event, error) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.added <- ev
	return ev, nil
}

// egressGateway is a gateway with what its egress proxy uses, and the
// sandboxed session s1 on server "tool" run for alpha in task-1.
func egressGateway(t testing.TB, dec Decider, rec Recorder, tasks *fakeTasks) *Gateway {
	g := &Gateway{cfg: &Config{Name: "test"}, logger: storetest.Logger(t), sessions: newSessions(clock.Real{}),
		budgets: &budgets{clock: clock.Real{}, store: &budget.Memory{}, scope: "test"},
		deps:    Deps{Decider: dec, Audit: rec, Revocations: NewRevocations(storetest.Logger(t)), Clock: clock.Real{}}}
	g.tasks = newTaskCache(tasks, clock.Real{}, nil)
	g.sessions.bind("tool", "s1", "spiffe://bulkhead.local/agent/alpha", "task-1")
	return g
}

// A compromised tool tries to exfiltrate a megabyte through an allowed
// destination: the egress budget (64 KiB per agent per task) cuts the
// stream, the destination receives no more than the budget, and the
// refusal is recorded with the agent and task.
func TestEgressBudgetCutsExfiltration(t *testing.T) {
	const limit = 64 << 10
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		received <- n
	}()
	rec := &keptRecorder{added: make(chan audit.Event, 16)}
	g := egressGateway(t, benchDecider{}, rec, &fakeTasks{state: TaskState{ID: "task-1", Agent: "spiffe://bulkhead.local/agent/alpha", Open: true}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	target := sink.Addr().String()
	go g.serveEgress("tool", "s1", egressConfig{allowed: []string{target}, bytes: limit}, ln, nil)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT: %q %v", line, err)
	}
	secret := strings.Repeat("s", 1<<20)
	_, _ = io.WriteString(c, secret) // the proxy stops reading once the budget is spent
	c.(*net.TCPConn).CloseWrite()
	if n := <-received; n > limit {
		t.Fatalf("the destination received %d bytes, over the budget of %d", n, limit)
	} else {
		t.Logf("received %d of %d bytes", n, len(secret))
	}
	// The connection's decision first, then the budget's refusal.
	for _, want := range []string{"gateway.connect", "gateway.egress_budget"} {
		ev := <-rec.added
		if ev.Action != want || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Task != "task-1" {
			t.Fatalf("record %+v, want %s by alpha in task-1", ev, want)
		}
	}
}

// taintAware denies what a tainted task asks, as the shipped guardrail
// forbid-tainted-writes does for connect (a write).
type taintAware struct{}

func (taintAware) Decide(_ context.Context, q Decision) (policy.Decision, error) {
	return policy.Decision{ID: "d", Allowed: !q.Tainted, Version: 1}, nil
}

// Egress is decided with the session's task state: once the task is
// tainted (by untrusted output, or by a sandbox violation), its process
// can no longer connect out.
func TestEgressOfATaintedTaskIsDecidedAsTainted(t *testing.T) {
	for _, tainted := range []bool{false, true} {
		rec := &keptRecorder{added: make(chan audit.Event, 16)}
		g := egressGateway(t, taintAware{}, rec, &fakeTasks{state: TaskState{ID: "task-1", Agent: "spiffe://bulkhead.local/agent/alpha", Open: true, Tainted: tainted}})
		p := &egressProxy{g: g, server: "tool", session: "s1", egressConfig: egressConfig{allowed: []string{"api.example.com:443"}}}
		_, reason := p.decide("api.example.com:443")
		if (reason != "") != tainted {
			t.Fatalf("tainted=%v: refusal %q", tainted, reason)
		}
		if ev := <-rec.added; ev.Task != "task-1" || ev.Detail["tainted"] != fmt.Sprint(tainted) {
			t.Fatalf("tainted=%v: record %+v", tainted, ev)
		}
	}
}
