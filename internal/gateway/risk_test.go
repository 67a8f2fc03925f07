package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

const alphaID = "spiffe://bulkhead.local/agent/alpha"

// learned is three days of an agent that lists the files server and
// searches it, ten calls an hour around the clock (so no hour of the day
// is off its profile, whenever the test runs).
func learned(now time.Time) baseline.Source {
	var calls []baseline.Call
	for at := now.Add(-72 * time.Hour); at.Before(now.Add(-time.Hour)); at = at.Add(6 * time.Minute) {
		res := policy.Tool("files", "search").String()
		if at.Minute() < 6 {
			res = policy.ToolServer("files").String()
		}
		calls = append(calls, baseline.Call{Agent: alphaID, Resource: res, Time: at})
	}
	return baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
		return baseline.Learn(agent, calls, baseline.DefaultConfig), nil
	})
}

// toolArgs are arguments each of the files server's tools accepts.
var toolArgs = map[string]string{"search": `{"query":"q"}`, "read_file": `{"path":"/srv/a"}`, "write_file": `{"path":"/srv/a","content":"x"}`}

func callTool(t *testing.T, h *harness, hc *http.Client, sid, tool string) string {
	t.Helper()
	_, body, _, err := h.mcpPost(hc, sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"`+tool+`","arguments":`+toolArgs[tool]+`}}`)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// recordsOf returns the records of action.
func recordsOf(h *harness, action string) []audit.Event {
	var out []audit.Event
	for _, ev := range h.Rec.all() {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

// A compromised agent, well-behaved for three days, starts writing: the
// PDP sees each call's risk and why in its context, every decision record
// carries them, and once the risk reaches the alert threshold the call is
// recorded as an anomaly, once, not at every call.
func TestRiskReachesThePolicyAndTheRecord(t *testing.T) {
	dec := &decider{baselines: learned(time.Now()), denied: map[string]bool{"write_file": true}}
	h := startGatewayWith(t, dec, "", nil)
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)

	if body := callTool(t, h, hc, sid, "search"); !strings.Contains(body, `"result"`) || strings.Contains(body, "isError") {
		t.Fatalf("a usual call: %s", body)
	}
	last := func() gateway.Decision { d := dec.decided(); return d[len(d)-1] }
	if q := last(); q.Risk != 0 || len(q.RiskReasons) != 0 {
		t.Fatalf("a usual call scored %d %v", q.Risk, q.RiskReasons)
	}
	for i := range 3 {
		callTool(t, h, hc, sid, "write_file")
		if q := last(); q.Risk != 35+10*i || !slices.Contains(q.RiskReasons, baseline.ReasonNovelTool) {
			t.Fatalf("write %d scored %d %v", i, q.Risk, q.RiskReasons)
		}
	}
	if n := len(recordsOf(h, gateway.ActionAnomaly)); n != 0 {
		t.Fatalf("%d anomalies below the threshold", n)
	}
	callTool(t, h, hc, sid, "read_file")
	if q := last(); q.Risk != 65 || !slices.Equal(q.RiskReasons, []string{baseline.ReasonNovelTool, baseline.ReasonDenials}) {
		t.Fatalf("read after three denials scored %d %v", q.Risk, q.RiskReasons)
	}
	callTool(t, h, hc, sid, "read_file")
	anomalies := recordsOf(h, gateway.ActionAnomaly)
	if len(anomalies) != 1 || anomalies[0].Target != policy.Tool("files", "read_file").String() || anomalies[0].Detail["risk"] != "65" ||
		anomalies[0].Detail["risk_reasons"] != "novel_tool denials" || anomalies[0].Actor.ID != alphaID {
		t.Fatalf("anomalies: %+v", anomalies)
	}
	var scored int
	for _, ev := range recordsOf(h, "gateway.call_tool") {
		if ev.Target == policy.Tool("files", "write_file").String() && ev.Decision == audit.Deny {
			if !strings.Contains(ev.Detail["risk_reasons"], "novel_tool") || ev.Detail["risk_why"] == "" {
				t.Fatalf("a denial's record without its risk: %v", ev.Detail)
			}
			scored++
		}
	}
	if scored != 3 {
		t.Fatalf("%d scored denials recorded", scored)
	}
}

// openStream opens a GET stream through the gateway and returns its
// body; the stream is under its decision once this returns.
func openStream(t *testing.T, h *harness, hc *http.Client, sid string) io.ReadCloser {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+"/mcp/files", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp.Body
}

// ended waits for a stream to end, as its reader sees it.
func ended(t *testing.T, body io.Reader) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, body)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream is still open")
	}
}

// An agent holds a stream of the server's notifications open, then
// misbehaves: its next call raises its risk past what the policy allows,
// and the stream is decided again at once and cut, with a record — not
// when the agent's token expires. No clock moves in this test: the cut
// follows the risk's change, not a timer.
func TestStreamClosedWhenRiskChanges(t *testing.T) {
	dec := &decider{baselines: learned(time.Now()), denied: map[string]bool{"write_file": true}, denyAt: 10}
	h := startGatewayWith(t, dec, "", nil)
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)
	body := openStream(t, h, hc, sid)
	if n := gateway.OpenStreams(h.G); n != 1 {
		t.Fatalf("%d streams under decision", n)
	}
	start := time.Now()
	callTool(t, h, hc, sid, "write_file") // denied: one denial is 10 points
	ended(t, body)
	t.Logf("closed %s after the call that raised the risk returned", time.Since(start))
	closes := recordsOf(h, gateway.ActionStreamClose)
	if len(closes) != 1 || closes[0].Target != policy.ToolServer("files").String() || closes[0].Detail["risk_reasons"] != "denials" ||
		closes[0].Detail["opened_by"] == "" || closes[0].Decision != audit.Deny {
		t.Fatalf("stream closings: %+v", closes)
	}
}

// A policy change in the control plane's feed re-decides open streams:
// one the new policy refuses is cut and recorded; the others live on.
func TestStreamClosedWhenPolicyChanges(t *testing.T) {
	dec := &decider{baselines: learned(time.Now())}
	h := startGatewayWith(t, dec, "", nil)
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)
	body := openStream(t, h, hc, sid)
	h.Rev.Apply(audit.Event{Seq: 1, Action: policy.ActionRoleAdd, Decision: audit.Allow, Target: alphaID})
	if n := gateway.OpenStreams(h.G); n != 1 {
		t.Fatalf("a change that still allows it: %d streams", n)
	}
	dec.deny("") // the server's own resource: list_tools on ToolServer::"files"
	h.Rev.Apply(audit.Event{Seq: 2, Action: policy.ActionPolicyApply, Decision: audit.Allow, Target: "policy"})
	ended(t, body)
	if closes := recordsOf(h, gateway.ActionStreamClose); len(closes) != 1 {
		t.Fatalf("stream closings: %+v", closes)
	}
}

// An agent that reads its docs with a tool reads a key with the same
// tool: the shape of its arguments is new, the decision says so, and the
// record keeps the shape the baseline will learn from.
func TestNovelArgumentsRaiseTheRisk(t *testing.T) {
	now := time.Now()
	var calls []baseline.Call
	for at := now.Add(-72 * time.Hour); at.Before(now.Add(-time.Hour)); at = at.Add(6 * time.Minute) {
		calls = append(calls, baseline.Call{Agent: alphaID, Resource: policy.Tool("files", "read_file").String(), Shape: "path=path:/srv/docs", Time: at})
	}
	dec := &decider{baselines: baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
		return baseline.Learn(agent, calls, baseline.DefaultConfig), nil
	})}
	h := startGatewayWith(t, dec, "", nil)
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)
	read := func(path string) gateway.Decision {
		if _, _, _, err := h.mcpPost(hc, sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"`+path+`"}}}`); err != nil {
			t.Fatal(err)
		}
		d := dec.decided()
		return d[len(d)-1]
	}
	if q := read("/srv/docs/guide.md"); q.Risk != 0 {
		t.Fatalf("the usual read scored %d %v", q.Risk, q.RiskReasons)
	}
	if q := read("/home/u/.ssh/id_rsa"); q.Risk != 20 || !slices.Equal(q.RiskReasons, []string{baseline.ReasonNovelArgs}) {
		t.Fatalf("a key read scored %d %v", q.Risk, q.RiskReasons)
	}
	recs := recordsOf(h, "gateway.call_tool")
	if last := recs[len(recs)-1]; last.Detail["shape"] != "path=path:/home/u" || last.Detail["risk_reasons"] != baseline.ReasonNovelArgs {
		t.Fatalf("the record: %v", last.Detail)
	}
}

// What answers returned is recorded per agent, task and resource — not
// per call — for baselines to learn bytes per call and per task.
func TestUsageIsRecorded(t *testing.T) {
	h := startGatewayWith(t, &decider{}, "", &tasks{tainted: map[string]string{}})
	hc := h.agentIn(t, "alpha", "tk-1")
	sid := h.session(t, hc)
	for range 3 {
		callTool(t, h, hc, sid, "search")
	}
	callTool(t, h, hc, sid, "read_file")
	h.G.Close() // records what is left
	usage := recordsOf(h, gateway.ActionUsage)
	if len(usage) != 1 || usage[0].Actor.ID != alphaID || usage[0].Task != "tk-1" {
		t.Fatalf("usage records: %+v", usage)
	}
	var got map[string]baseline.Usage
	if err := json.Unmarshal([]byte(usage[0].Detail["usage"]), &got); err != nil {
		t.Fatal(err)
	}
	s, r := got[policy.Tool("files", "search").String()], got[policy.Tool("files", "read_file").String()]
	if s.Calls != 3 || s.Bytes < 3*30 || s.Items != 3 || r.Calls != 1 || r.Bytes < 30 || r.Items != 1 {
		t.Fatalf("usage: %+v", got)
	}
}

// A task's end re-decides the streams of that task only: one opened in
// the task is cut (the agent is back at its baseline, where the policy
// here allows nothing), another task's lives on.
func TestTaskEndRedecidesItsStreams(t *testing.T) {
	dec := &decider{baselines: learned(time.Now()), outsideTasks: true}
	ts := &endingTasks{ended: map[string]bool{}}
	h := startGatewayWith(t, dec, "", ts)
	alpha1, alpha2 := h.agentIn(t, "alpha", "tk-1"), h.agentIn(t, "alpha", "tk-2")
	body1 := openStream(t, h, alpha1, h.session(t, alpha1))
	openStream(t, h, alpha2, h.session(t, alpha2))
	if n := gateway.OpenStreams(h.G); n != 2 {
		t.Fatalf("%d streams", n)
	}
	ts.end("tk-1")
	h.Rev.Apply(audit.Event{Seq: 1, Action: "task.complete", Decision: audit.Allow, Task: "tk-1", Target: alphaID})
	ended(t, body1)
	if n := gateway.OpenStreams(h.G); n != 1 {
		t.Fatalf("%d streams after tk-1 ended", n)
	}
	if closes := recordsOf(h, gateway.ActionStreamClose); len(closes) != 1 || closes[0].Task != "tk-1" {
		t.Fatalf("closings: %+v", closes)
	}
}

// endingTasks is a control plane whose tasks are open until ended; the
// decider sees a task only while it is open. grants are each task's
// grants in force; one whose uses run out leaves them.
type endingTasks struct {
	mu     sync.Mutex
	ended  map[string]bool
	grants map[string][]gateway.TaskGrant
}

// drop takes a grant out of a task's state (revoked, or its uses spent).
func (e *endingTasks) drop(task, elevation string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.grants[task] = slices.DeleteFunc(e.grants[task], func(g gateway.TaskGrant) bool { return g.Elevation == elevation })
}

func (e *endingTasks) end(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ended[id] = true
}

func (e *endingTasks) TaskState(_ context.Context, id string) (gateway.TaskState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return gateway.TaskState{ID: id, Agent: alphaID, Manifest: "m", Open: !e.ended[id], Status: "completed", Grants: slices.Clone(e.grants[id])}, nil
}

func (e *endingTasks) ReportOutput(context.Context, string, string, cedar.EntityUID, string) (bool, bool, error) {
	return false, false, nil
}

func (e *endingTasks) UseGrant(_ context.Context, elevation string, u gateway.GrantUse) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, g := range e.grants[u.Task] {
		if g.Elevation == elevation {
			e.grants[u.Task][i].Uses++
			if g.MaxUses > 0 && g.Uses+1 >= g.MaxUses {
				e.grants[u.Task] = slices.Delete(e.grants[u.Task], i, i+1) // exhausted: no longer in force
			}
			return nil
		}
	}
	return errors.New("no such grant")
}

// A stream a one-use grant opened lives on when that use was its last
// (the grant is exhausted by the stream itself), but is cut when an
// operator revokes the grant it runs under.
func TestRevokedGrantCutsItsStream(t *testing.T) {
	dec := &decider{baselines: learned(time.Now()), needGrant: map[string]string{"": "m/watch"}}
	until := time.Now().Add(time.Hour)
	ts := &endingTasks{ended: map[string]bool{}, grants: map[string][]gateway.TaskGrant{
		"tk-1": {{Elevation: "el-1", Name: "m/watch", ExpiresAt: until, MaxUses: 1}},
		"tk-2": {{Elevation: "el-2", Name: "m/watch", ExpiresAt: until}},
	}}
	h := startGatewayWith(t, dec, "", ts)
	alpha1, alpha2 := h.agentIn(t, "alpha", "tk-1"), h.agentIn(t, "alpha", "tk-2")
	body1 := openStream(t, h, alpha1, h.session(t, alpha1))
	body2 := openStream(t, h, alpha2, h.session(t, alpha2))
	// tk-1's grant is exhausted by its stream: re-decided, the stream lives.
	h.Rev.Apply(audit.Event{Seq: 1, Action: elevation.ActionExhaust, Decision: audit.Allow, Task: "tk-1", Detail: map[string]string{"elevation": "el-1"}})
	// tk-2's grant is revoked: its stream is cut.
	ts.drop("tk-2", "el-2")
	h.Rev.Apply(audit.Event{Seq: 2, Action: elevation.ActionRevoke, Decision: audit.Allow, Task: "tk-2", Detail: map[string]string{"elevation": "el-2"}})
	ended(t, body2)
	closes := recordsOf(h, gateway.ActionStreamClose)
	if len(closes) != 1 || closes[0].Task != "tk-2" {
		t.Fatalf("closings: %+v", closes)
	}
	// A later re-decision of tk-1 (its task tainted, say) still counts the
	// grant it spent.
	n := len(dec.decided())
	gateway.RecheckNow(h.G)
	if len(dec.decided()) == n {
		t.Fatal("tk-1's stream was not decided again")
	}
	if n := gateway.OpenStreams(h.G); n != 1 || len(recordsOf(h, gateway.ActionStreamClose)) != 1 {
		t.Fatalf("%d streams open, want tk-1's", n)
	}
	_ = body1
}

// An agent piles up denials, then delegates to a fresh sub-agent: the
// sub-agent is judged by its root's baseline and last hour, so its first
// call carries the denials (and a tool the root never used is novel).
func TestDelegatingDoesNotResetTheRisk(t *testing.T) {
	dec := &decider{baselines: learned(time.Now()), denied: map[string]bool{"write_file": true}}
	h := startGatewayWith(t, dec, "", nil)
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)
	for range 3 {
		callTool(t, h, hc, sid, "write_file")
	}
	sub := h.agent(t, "alpha/sub/w1")
	callTool(t, h, sub, h.session(t, sub), "read_file")
	d := dec.decided()
	if q := d[len(d)-1]; q.Agent.String() != alphaID+"/sub/w1" || q.Risk != 65 ||
		!slices.Equal(q.RiskReasons, []string{baseline.ReasonNovelTool, baseline.ReasonDenials}) {
		t.Fatalf("the sub-agent's first call: %s %d %v", q.Agent, q.Risk, q.RiskReasons)
	}
}

// The control plane is briefly unreachable while a stream is decided
// again: the stream is kept and decided again until a decision can be
// made; only an outage that outlasts the retries cuts it (fail closed).
func TestStreamSurvivesABriefOutageButNotALongOne(t *testing.T) {
	// Retries are driven by hand here: none fires on its own.
	restore := gateway.SetRecheckRetry(time.Hour, 1_000_000)
	defer restore()
	dec := &decider{baselines: learned(time.Now())}
	h := startGatewayWith(t, dec, "", nil)
	hc := h.agent(t, "alpha")
	body := openStream(t, h, hc, h.session(t, hc))
	// A brief outage: the re-decision fails three times, then succeeds.
	dec.failing.Store(true)
	for range 3 {
		gateway.RecheckNow(h.G)
	}
	dec.failing.Store(false)
	gateway.RecheckNow(h.G)
	if closes := recordsOf(h, gateway.ActionStreamClose); len(closes) != 0 || gateway.OpenStreams(h.G) != 1 || dec.failed.Load() != 3 {
		t.Fatalf("a brief outage cut the stream: %+v", closes)
	}
	// A long one: past the retries, the stream is cut.
	gateway.SetRecheckRetry(time.Hour, 5)
	dec.failing.Store(true)
	for range 5 {
		gateway.RecheckNow(h.G)
	}
	ended(t, body)
	if closes := recordsOf(h, gateway.ActionStreamClose); len(closes) != 1 || !strings.Contains(closes[0].Reasons[0], "decision failed 5 times") {
		t.Fatalf("closings: %+v", closes)
	}
}
