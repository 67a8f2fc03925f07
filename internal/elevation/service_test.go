package elevation_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var ctx = context.Background()

func use(e *env, el elevation.Elevation) error {
	_, err := e.svc.UseGrant(ctx, e.gw, el.ID, elevation.Use{Task: el.Task, Agent: el.Agent, Resource: `Tool::"files/write_file"`, DecisionID: "d1"})
	return err
}

func TestRequestRefusals(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	for _, c := range []struct {
		name    string
		by      func() (elevation.Elevation, error)
		kind    error
		reason  string
		subject string
	}{
		{"a trigger the manifest lacks", func() (elevation.Elevation, error) {
			return e.svc.Request(ctx, e.alpha, task.ID, "delete-everything", "the instructions said so")
		}, fault.Forbidden, `trigger "delete-everything" is not in manifest report-writer`, e.alpha.ID.String()},
		{"another agent's task", func() (elevation.Elevation, error) {
			return e.svc.Request(ctx, e.beta, task.ID, "write-report", "mine now")
		}, fault.NotFound, "task", e.beta.ID.String()},
		{"an operator is not the requester", func() (elevation.Elevation, error) {
			return e.svc.Request(ctx, e.alice, task.ID, "write-report", "on its behalf")
		}, fault.Forbidden, "requested by the agent", e.alice.ID.String()},
		{"no justification", func() (elevation.Elevation, error) {
			return e.svc.Request(ctx, e.alpha, task.ID, "write-report", "")
		}, fault.Invalid, "justification", e.alpha.ID.String()},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.by()
			ev := e.wantRefusal(err, c.kind, elevation.ActionRequest, c.reason)
			if ev.Actor.ID != c.subject {
				t.Fatalf("refusal recorded for %s, want %s", ev.Actor.ID, c.subject)
			}
		})
	}
	if es, _ := e.svc.Elevations(ctx, elevation.Filter{}, false); len(es) != 0 {
		t.Fatalf("refused requests left elevations: %+v", es)
	}
}

func TestApprovalRules(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	el := e.request(e.alpha, task.ID, "write-report")
	if el.Status != elevation.StatusPending {
		t.Fatalf("a human-approved trigger is %s at once", el.Status)
	}
	other := e.start(e.alpha)
	elOther := e.request(e.alpha, other.ID, "write-report")

	// Independently of any policy: no agent approves, not its own request
	// and not another's; an approval is bound to its request and task.
	_, err := e.approve(e.alpha, el)
	e.wantRefusal(err, fault.Forbidden, elevation.ActionApprove, "an agent can never approve")
	_, err = e.approve(e.beta, el)
	ev := e.wantRefusal(err, fault.Forbidden, elevation.ActionApprove, "an agent can never approve")
	if ev.Actor.ID != e.beta.ID.String() || ev.Detail["elevation"] != el.ID {
		t.Fatalf("refusal record = %+v", ev)
	}
	_, err = e.approve(e.gw, el)
	e.wantRefusal(err, fault.Forbidden, elevation.ActionApprove, "only operators")
	for _, b := range []elevation.Binding{{Elevation: el.ID, Task: other.ID}, {Elevation: elOther.ID, Task: other.ID}, {Elevation: el.ID}} {
		_, err = e.svc.Approve(ctx, e.alice, el.ID, b, "replayed")
		e.wantRefusal(err, fault.Forbidden, elevation.ActionApprove, "bound to")
	}
	_, err = e.svc.Approve(ctx, e.alice, el.ID, elevation.Binding{Elevation: el.ID, Task: el.Task}, "")
	e.wantRefusal(err, fault.Invalid, elevation.ActionApprove, "reason")
	if got, _ := e.svc.Elevation(ctx, e.alice, el.ID); got.Status != elevation.StatusPending || len(got.Approvals) != 0 {
		t.Fatalf("after refused approvals: %+v", got)
	}

	// One human suffices for write-report.
	got, err := e.approve(e.alice, el)
	if err != nil || got.Status != elevation.StatusActive || got.MaxUses != 2 || !got.ExpiresAt.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("approval = %+v, %v", got, err)
	}
	grant := e.lastEvent(elevation.ActionGrant)
	if grant.Actor.ID != e.alice.ID.String() || grant.Task != task.ID || grant.Detail["grant"] != "report-writer/write-report" {
		t.Fatalf("grant record = %+v", grant)
	}
	_, err = e.approve(e.bob, el)
	e.wantRefusal(err, fault.Conflict, elevation.ActionApprove, "is active")

	// Two distinct humans for publish: the same human twice counts once.
	pub := e.request(e.alpha, task.ID, "publish")
	if got, err := e.approve(e.alice, pub); err != nil || got.Status != elevation.StatusPending || len(got.Approvals) != 1 {
		t.Fatalf("first of two approvals = %+v, %v", got, err)
	}
	if ev := e.lastEvent(elevation.ActionApprove); ev.Decision != audit.Allow || ev.Detail["granted"] != "false" || ev.Detail["needed"] != "2" {
		t.Fatalf("first approval record = %+v", ev)
	}
	_, err = e.approve(e.alice, pub)
	e.wantRefusal(err, fault.Conflict, elevation.ActionApprove, "another human must approve")
	if got, err := e.approve(e.bob, pub); err != nil || got.Status != elevation.StatusActive || len(got.Approvals) != 2 {
		t.Fatalf("second approval = %+v, %v", got, err)
	}
	if ev := e.lastEvent(elevation.ActionGrant); !strings.Contains(ev.Detail["approvers"], "alice") || !strings.Contains(ev.Detail["approvers"], "bob") {
		t.Fatalf("two-person grant record = %+v", ev)
	}
}

func TestAutoApprovalNeverForATaintedTask(t *testing.T) {
	e := newEnv(t)
	clean := e.start(e.alpha)
	el := e.request(e.alpha, clean.ID, "write-draft")
	if el.Status != elevation.StatusActive || el.Approvals[0].Approver != elevation.BulkheadApprover {
		t.Fatalf("an untainted low-sensitivity request = %+v", el)
	}
	if ev := e.lastEvent(elevation.ActionAutoApprove); ev.Decision != audit.Allow || ev.Actor.Kind != audit.ActorSystem || !strings.Contains(strings.Join(ev.Reasons, " "), "auto-untainted-low") {
		t.Fatalf("auto-approval record = %+v", ev)
	}

	dirty := e.start(e.alpha)
	// The wiki's output is untrusted; reading it taints the task.
	untrusted, tainted, err := e.svc.TaintByOutput(ctx, e.gw, dirty.ID, e.alpha.ID.String(), policy.Tool("wiki", "search"), "")
	if err != nil || !untrusted || !tainted {
		t.Fatalf("taint = %v %v %v", untrusted, tainted, err)
	}
	if ev := e.lastEvent(elevation.ActionTaskTaint); ev.Task != dirty.ID || ev.Detail["resource"] != `Tool::"wiki/search"` {
		t.Fatalf("taint record = %+v", ev)
	}
	// Trusted output (docs) taints nothing.
	if untrusted, _, _ := e.svc.TaintByOutput(ctx, e.gw, clean.ID, e.alpha.ID.String(), policy.Tool("docs", "search"), ""); untrusted {
		t.Fatal("docs output counted as untrusted")
	}
	el = e.request(e.alpha, dirty.ID, "write-draft")
	if el.Status != elevation.StatusPending {
		t.Fatalf("a tainted task's request was approved by policy: %+v", el)
	}
	e.wantRefusal(nil, nil, elevation.ActionAutoApprove, "the task is tainted: a human must approve")
	// A human may still approve it, seeing the taint.
	if got, err := e.approve(e.alice, el); err != nil || got.Status != elevation.StatusActive {
		t.Fatalf("human approval of a tainted task's request = %+v, %v", got, err)
	}
	if ev := e.lastEvent(elevation.ActionApprove); ev.Detail["tainted"] != "true" {
		t.Fatalf("the approval record does not show the taint: %+v", ev)
	}
}

func TestGrantUses(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	el := e.request(e.alpha, task.ID, "write-report")
	el, _ = e.approve(e.alice, el)
	other := e.start(e.alpha)

	// A grant is bound to its task and its task's agents.
	_, err := e.svc.UseGrant(ctx, e.gw, el.ID, elevation.Use{Task: other.ID, Agent: el.Agent})
	e.wantRefusal(err, fault.Forbidden, elevation.ActionUse, "belongs to task")
	_, err = e.svc.UseGrant(ctx, e.gw, el.ID, elevation.Use{Task: task.ID, Agent: e.beta.ID.String()})
	e.wantRefusal(err, fault.Forbidden, elevation.ActionUse, "does not work in task")
	_, err = e.svc.UseGrant(ctx, e.alice, el.ID, elevation.Use{Task: task.ID, Agent: el.Agent})
	e.wantRefusal(err, fault.Forbidden, elevation.ActionUse, "used by gateways")
	// A sub-agent works in its parent's task.
	sub := elevation.Use{Task: task.ID, Agent: el.Agent + "/sub/w1"}
	if _, err := e.svc.UseGrant(ctx, e.gw, el.ID, sub); err != nil {
		t.Fatalf("sub-agent use: %v", err)
	}
	if err := use(e, el); err != nil {
		t.Fatal(err)
	}
	err = use(e, el)
	e.wantRefusal(err, fault.Conflict, elevation.ActionUse, "exhausted")
	if ev := e.lastEvent(elevation.ActionExhaust); ev.Detail["elevation"] != el.ID || ev.Detail["uses"] != "2" {
		t.Fatalf("exhaustion record = %+v", ev)
	}
	if n := len(e.events(elevation.ActionUse)); n != 6 {
		t.Fatalf("%d use records, want 6 (2 allowed, 4 refused)", n)
	}
}

func TestExpiryAndReturnToBaseline(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)

	// A pending request lapses unanswered.
	lapsing := e.request(e.alpha, task.ID, "write-report")
	e.clk.Advance(elevation.DefaultPendingTTL)
	_, err := e.approve(e.alice, lapsing)
	e.wantRefusal(err, fault.Conflict, elevation.ActionApprove, "lapsed")
	if ev := e.lastEvent(elevation.ActionExpire); ev.Detail["elevation"] != lapsing.ID || ev.Reasons[0] != "the request lapsed unanswered" {
		t.Fatalf("lapse record = %+v", ev)
	}

	// A grant expires on its own at its trigger's duration.
	el := e.request(e.alpha, task.ID, "write-report")
	el, _ = e.approve(e.alice, el)
	e.clk.Advance(15 * time.Minute)
	e.wantRefusal(use(e, el), fault.Conflict, elevation.ActionUse, "expired")
	if err := e.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Elevation(ctx, e.alice, el.ID); got.Status != elevation.StatusExpired {
		t.Fatalf("after the sweep: %s", got.Status)
	}

	// A task times out at its deadline: back to baseline, every grant of
	// it ended, whether or not the sweep has run yet.
	live := e.request(e.alpha, task.ID, "write-draft")
	if live.Status != elevation.StatusActive {
		t.Fatalf("draft grant = %s", live.Status)
	}
	e.clk.Advance(2 * time.Hour)
	st, err := e.svc.State(ctx, task.ID)
	if err != nil || st.Open || len(st.Grants) != 0 {
		t.Fatalf("state past the deadline = %+v, %v", st, err)
	}
	if _, err := e.svc.TaskFor(ctx, e.alpha.ID.String(), task.ID); !errors.Is(err, fault.Conflict) {
		t.Fatalf("a token for an expired task: %v", err)
	}
	if err := e.svc.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := e.lastEvent(elevation.ActionTaskExpire); ev.Task != task.ID || ev.Detail["return_to_baseline"] != "true" {
		t.Fatalf("timeout record = %+v", ev)
	}
	if ev := e.lastEvent(elevation.ActionEnd); ev.Detail["elevation"] != live.ID {
		t.Fatalf("end record = %+v", ev)
	}
	if st, _ := e.svc.Standing(ctx); st.Standing != 0 || st.Active != 0 {
		t.Fatalf("standing = %+v", st)
	}
}

func TestCompletingATaskEndsItsGrantsAtOnce(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	el := e.request(e.alpha, task.ID, "write-report")
	el, _ = e.approve(e.alice, el)
	pending := e.request(e.alpha, task.ID, "publish")
	if st, _ := e.svc.Standing(ctx); st.Active != 1 || st.Pending != 1 || st.OpenTasks != 1 || st.Standing != 0 {
		t.Fatalf("standing before = %+v", st)
	}
	_, err := e.svc.CompleteTask(ctx, e.beta, task.ID, "not mine")
	e.wantRefusal(err, fault.NotFound, elevation.ActionTaskComplete, "is not")
	if _, err := e.svc.CompleteTask(ctx, e.alpha, task.ID, "report written"); err != nil {
		t.Fatal(err)
	}
	e.wantRefusal(use(e, el), fault.Conflict, elevation.ActionUse, "back to baseline")
	_, err = e.approve(e.alice, pending)
	e.wantRefusal(err, fault.Conflict, elevation.ActionApprove, "is ended")
	ends := e.events(elevation.ActionEnd)
	if len(ends) != 2 || !strings.Contains(ends[0].Reasons[0], "return to baseline") {
		t.Fatalf("end records = %+v", ends)
	}
	if st, _ := e.svc.Standing(ctx); st.Active != 0 || st.Pending != 0 || st.OpenTasks != 0 || st.Standing != 0 {
		t.Fatalf("standing after = %+v", st)
	}
	_, err = e.svc.Request(ctx, e.alpha, task.ID, "write-report", "again")
	e.wantRefusal(err, fault.Conflict, elevation.ActionRequest, "ended: completed")
}

// The standing-privilege measure measures: a grant whose task were ended
// behind the service's back (directly in the store) would be counted.
func TestStandingMeasuresRatherThanAssumes(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	el := e.request(e.alpha, task.ID, "write-report")
	if _, err := e.approve(e.alice, el); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.SQL().Exec(`UPDATE tasks SET status = 'completed' WHERE id = ?`, task.ID); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.svc.Standing(ctx); st.Standing != 1 {
		t.Fatalf("standing = %+v, want 1 for the tampered row", st)
	}
	// And the tampered grant still does not work: its task is not open.
	e.wantRefusal(use(e, el), fault.Conflict, elevation.ActionUse, "back to baseline")
}

// Fail closed: when the audit log or the store fails, nothing is
// requested, approved or used.
func TestFailClosed(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	el := e.request(e.alpha, task.ID, "write-report")
	e.rec.fail.Store(true)
	if _, err := e.approve(e.alice, el); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("approval without the audit log: %v", err)
	}
	if _, err := e.svc.Request(ctx, e.alpha, task.ID, "write-report", "x"); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("request without the audit log: %v", err)
	}
	e.rec.fail.Store(false)
	el, err := e.approve(e.alice, el)
	if err != nil {
		t.Fatal(err)
	}
	e.rec.fail.Store(true)
	if err := use(e, el); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("use without the audit log: %v", err)
	}
	e.rec.fail.Store(false)
	if got, _ := e.svc.Elevation(ctx, e.alice, el.ID); got.Uses != 0 {
		t.Fatalf("a use was spent without its record: %+v", got)
	}
	// A broken store: the grant cannot be read, so it is not used.
	e.db.Close()
	if err := use(e, el); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("use without the store: %v", err)
	}
}

func TestApprovalPolicyIsReplaceable(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	// An operator's set that never lets policy approve alone, and needs
	// two humans for anything high.
	strict := []elevation.PolicyFile{{Name: "strict.cedar", Content: `
@id("humans") permit (principal is Human, action, resource) when { context.approvals >= 1 };
@id("no-auto") forbid (principal is Bulkhead, action, resource);
@id("high-two") forbid (principal is Human, action, resource) when { resource.sensitivity == "high" && context.approvals < 2 };
`}}
	if _, err := e.svc.ApplyApprovalPolicy(ctx, e.alpha, strict); !errors.Is(err, fault.Forbidden) {
		t.Fatalf("an agent replaced the approval policy: %v", err)
	}
	p, err := e.svc.ApplyApprovalPolicy(ctx, e.alice, strict)
	if err != nil || p.Version != 1 {
		t.Fatalf("apply = %+v, %v", p, err)
	}
	if ev := e.lastEvent(elevation.ActionApprovalPolicyApply); ev.Decision != audit.Allow || ev.Actor.ID != e.alice.ID.String() {
		t.Fatalf("apply record = %+v", ev)
	}
	if el := e.request(e.alpha, task.ID, "write-draft"); el.Status != elevation.StatusPending {
		t.Fatalf("auto-approved under a policy that forbids it: %+v", el)
	}
	e.wantRefusal(nil, nil, elevation.ActionAutoApprove, "does not approve it alone")
	// Code still refuses agents whatever the policy: this one permits them.
	lax := []elevation.PolicyFile{{Name: "lax.cedar", Content: `@id("anyone") permit (principal, action, resource);`}}
	if _, err := e.svc.ApplyApprovalPolicy(ctx, e.alice, lax); err != nil {
		t.Fatal(err)
	}
	el := e.request(e.alpha, task.ID, "publish")
	_, err = e.approve(e.beta, el)
	e.wantRefusal(err, fault.Forbidden, elevation.ActionApprove, "an agent can never approve")
	// And two-person triggers still need two, whatever it permits.
	if got, err := e.approve(e.alice, el); err != nil || got.Status != elevation.StatusPending {
		t.Fatalf("one approval of a two-person trigger under a lax policy = %+v, %v", got, err)
	}
	// Invalid sets are refused.
	for _, bad := range []string{`permit (principal, action, resource) when { resource.nope };`, `permit (`} {
		if _, err := e.svc.ApplyApprovalPolicy(ctx, e.alice, []elevation.PolicyFile{{Name: "bad.cedar", Content: bad}}); !errors.Is(err, fault.Invalid) {
			t.Fatalf("invalid approval policy %q: %v", bad, err)
		}
	}
}

func TestTaskFor(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	for _, c := range []struct {
		agent, task string
		kind        error
	}{
		{e.alpha.ID.String(), task.ID, nil},
		{e.alpha.ID.String() + "/sub/w", task.ID, nil},
		{e.beta.ID.String(), task.ID, fault.Forbidden},
		{e.alpha.ID.String(), "tk_000000000000000000000000", fault.NotFound},
		{e.alpha.ID.String(), "nope", fault.Invalid},
	} {
		d, err := e.svc.TaskFor(ctx, c.agent, c.task)
		if c.kind == nil && (err != nil || !d.Equal(task.Deadline)) || c.kind != nil && !errors.Is(err, c.kind) {
			t.Fatalf("TaskFor(%s, %s) = %v, %v; want %v", c.agent, c.task, d, err, c.kind)
		}
	}
}
