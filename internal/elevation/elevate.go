package elevation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// BulkheadApprover names the approval policy when it approves alone.
const BulkheadApprover = "bulkhead"

// maxJustification bounds what a requesting agent may write.
const maxJustification = 1024

// Request asks, for the calling agent's open task, for one of its
// manifest's triggers. A trigger the manifest lacks is refused outright.
// If the trigger allows approval by policy and the approval policy set
// approves, the grant is in force on return; otherwise the elevation waits
// for humans until it lapses.
func (s *Service) Request(ctx context.Context, by peer.Principal, task, trigger, justification string) (Elevation, error) {
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionRequest, Target: by.ID.String(), Task: task,
		Detail: map[string]string{"trigger": trigger, "justification": justification}}
	if by.Kind != audit.ActorAgent {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevations are requested by the agent working in the task", fault.Forbidden))
	}
	if err := ValidateTaskID(task); err != nil {
		return Elevation{}, s.deny(ctx, ev, err)
	}
	if err := ValidateName("trigger", trigger); err != nil {
		return Elevation{}, s.deny(ctx, ev, err)
	}
	if justification == "" || len(justification) > maxJustification {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: a justification of 1 to %d bytes is required", fault.Invalid, maxJustification))
	}
	t, err := s.store.GetTask(ctx, task)
	if errors.Is(err, fault.NotFound) {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: task %s", fault.NotFound, task))
	}
	if err != nil {
		return Elevation{}, unavailable(err)
	}
	if !inTask(t, by.ID.String()) {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: task %s", fault.NotFound, task))
	}
	ev.Detail["manifest"] = t.Manifest
	if !t.OpenAt(now) {
		return Elevation{}, s.deny(ctx, ev, t.Ended())
	}
	m, err := s.store.GetManifest(ctx, t.Manifest)
	if err != nil {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: manifest %s: %w", fault.Unavailable, t.Manifest, err))
	}
	tr, ok := m.Trigger(trigger)
	if !ok {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: trigger %q is not in manifest %s", fault.Forbidden, trigger, t.Manifest))
	}
	id, err := newID("el")
	if err != nil {
		return Elevation{}, err
	}
	e := Elevation{ID: id, Task: task, Agent: by.ID.String(), Manifest: t.Manifest, Trigger: trigger, Justification: justification,
		Approval: tr.Approval, Sensitivity: tr.Sensitivity, Tainted: t.Tainted, Status: StatusPending, RequestedAt: now,
		RequestExpiresAt: minTime(now.Add(s.pendingTTL), t.Deadline)}
	ev.Detail["elevation"] = id
	ev.Detail["approval"] = tr.Approval
	ev.Detail["sensitivity"] = tr.Sensitivity
	ev.Detail["tainted"] = fmt.Sprint(t.Tainted)
	if err := s.act(ctx, ev, func() error { return s.store.CreateElevation(ctx, e) }); err != nil {
		return Elevation{}, unavailable(err)
	}
	if tr.Approval != ApprovalPolicy {
		return e, nil
	}
	return s.autoApprove(ctx, e, t, tr)
}

// autoApprove asks the approval policy whether it may approve e alone.
// A refusal leaves e pending for a human.
func (s *Service) autoApprove(ctx context.Context, e Elevation, t Task, tr Trigger) (Elevation, error) {
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: audit.Actor{Kind: audit.ActorSystem, ID: BulkheadApprover}, Action: ActionAutoApprove,
		Target: e.Agent, Task: e.Task, Detail: map[string]string{"elevation": e.ID, "trigger": e.Trigger, "tainted": fmt.Sprint(t.Tainted)}}
	// Whatever the policy says: untrusted output may have written the
	// request, so a person must read it.
	if t.Tainted {
		_ = s.deny(ctx, ev, errors.New("the task is tainted: a human must approve"))
		return e, nil
	}
	set, err := s.approvalPolicy(ctx)
	if err != nil {
		_ = s.deny(ctx, ev, err)
		return e, nil
	}
	ev.Detail["approval_policy_version"] = fmt.Sprint(set.version)
	ans, err := set.decide(approvalQuestion{principal: cedar.NewEntityUID(typeBulkhead, BulkheadApprover), e: e, trigger: tr})
	if err != nil || !ans.allowed {
		why := err
		if why == nil {
			why = fmt.Errorf("the approval policy does not approve it alone %v", ans.reasons)
		}
		ev.Reasons = ans.reasons
		_ = s.deny(ctx, ev, why)
		return e, nil
	}
	ev.Reasons = ans.reasons
	return s.grant(ctx, ev, e, t, tr, Approval{Elevation: e.ID, Task: e.Task, Approver: BulkheadApprover, Reason: "approved by policy", At: now})
}

// grant records an approval that puts e in force and stores it with the
// grant, bounded by the trigger and by the task.
func (s *Service) grant(ctx context.Context, ev audit.Event, e Elevation, t Task, tr Trigger, a Approval) (Elevation, error) {
	g := Grant{ExpiresAt: minTime(a.At.Add(time.Duration(tr.MaxDuration)), t.Deadline), MaxUses: tr.MaxUses}
	ev.Detail["expires_at"] = g.ExpiresAt.UTC().Format(time.RFC3339)
	ev.Detail["max_uses"] = fmt.Sprint(g.MaxUses)
	ev.Detail["granted"] = "true"
	if err := s.act(ctx, ev, func() error { return s.store.Approve(ctx, a, &g) }); err != nil {
		return Elevation{}, unavailable(err)
	}
	e.Status, e.GrantedAt, e.ExpiresAt, e.MaxUses = StatusActive, a.At, g.ExpiresAt, g.MaxUses
	e.Approvals = append(e.Approvals, a)
	s.after(ctx, audit.Event{Time: a.At, Actor: ev.Actor, Action: ActionGrant, Target: e.Agent, Task: e.Task,
		Detail: map[string]string{"elevation": e.ID, "trigger": e.Trigger, "grant": GrantName(e.Manifest, e.Trigger),
			"expires_at": ev.Detail["expires_at"], "max_uses": ev.Detail["max_uses"], "approvers": approverList(e.Approvals)}})
	return e, nil
}

func approverList(as []Approval) string {
	out := ""
	for i, a := range as {
		if i > 0 {
			out += " "
		}
		out += a.Approver
	}
	return out
}

// Binding is what an approval or denial is bound to: the request and its
// task, as the approver saw them. An approval replayed on another request
// or task does not match and is refused.
type Binding struct {
	Elevation string
	Task      string
}

// Approve records a human's approval of a pending elevation and, once the
// approvals satisfy the trigger and the approval policy, puts the grant
// in force. Independently of any policy it refuses an agent (any agent:
// the requester or another), the requester, an approval bound to another
// request or task, one approver twice, and a request that lapsed.
func (s *Service) Approve(ctx context.Context, by peer.Principal, id string, b Binding, reason string) (Elevation, error) {
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionApprove, Target: "", Task: b.Task,
		Detail: map[string]string{"elevation": id, "bound_elevation": b.Elevation, "bound_task": b.Task}}
	if reason != "" {
		ev.Reasons = []string{reason}
	}
	// An agent can never approve: not its own request, not another's. This
	// does not depend on the approval policy, which an operator may change.
	if by.Kind == audit.ActorAgent {
		// Recorded against the requester's story when the request exists.
		ev.Target = by.ID.String()
		if ValidateElevationID(id) == nil {
			if e, err := s.store.GetElevation(ctx, id); err == nil {
				ev.Target, ev.Task = e.Agent, e.Task
			}
		}
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: an agent can never approve an elevation", fault.Forbidden))
	}
	if by.Kind != audit.ActorOperator {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: only operators (humans) approve elevations", fault.Forbidden))
	}
	e, t, tr, err := s.loadPending(ctx, &ev, id, b, reason)
	if err != nil {
		return Elevation{}, err
	}
	approver := by.ID.String()
	if approver == e.Agent {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: the requester cannot approve its own request", fault.Forbidden))
	}
	approvers := []string{}
	for _, a := range e.Approvals {
		if a.Approver == approver {
			return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: %s approved this request already; another human must approve", fault.Conflict, approver))
		}
		if a.Approver != BulkheadApprover {
			approvers = append(approvers, a.Approver)
		}
	}
	approvers = append(approvers, approver)
	slices.Sort(approvers)
	set, err := s.approvalPolicy(ctx)
	if err != nil {
		return Elevation{}, s.deny(ctx, ev, err)
	}
	ev.Detail["approval_policy_version"] = fmt.Sprint(set.version)
	ev.Detail["approvals"] = fmt.Sprint(len(approvers))
	ans, err := set.decide(approvalQuestion{principal: cedar.NewEntityUID(typeHuman, cedar.String(approver)), e: e, trigger: tr, approvers: approvers})
	if err != nil {
		return Elevation{}, s.deny(ctx, ev, err)
	}
	if ans.forbidden {
		ev.Reasons = append(ev.Reasons, ans.reasons...)
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: the approval policy refuses this approval %v", fault.Forbidden, ans.reasons))
	}
	ev.Reasons = append(ev.Reasons, ans.reasons...)
	a := Approval{Elevation: e.ID, Task: e.Task, Approver: approver, Reason: reason, At: now}
	// The trigger's approvers are a floor the policy cannot lower.
	if ans.allowed && len(approvers) >= required(tr.Approval) {
		return s.grant(ctx, ev, e, t, tr, a)
	}
	ev.Detail["granted"] = "false"
	ev.Detail["needed"] = fmt.Sprint(required(tr.Approval))
	if err := s.act(ctx, ev, func() error { return s.store.Approve(ctx, a, nil) }); err != nil {
		return Elevation{}, unavailable(err)
	}
	e.Approvals = append(e.Approvals, a)
	return e, nil
}

// required is how many distinct humans a trigger's approval mode needs.
func required(mode string) int {
	if mode == ApprovalTwoHumans {
		return 2
	}
	return 1
}

// loadPending loads an elevation for a human's decision and checks the
// binding and that it can still be decided, recording any refusal.
func (s *Service) loadPending(ctx context.Context, ev *audit.Event, id string, b Binding, reason string) (Elevation, Task, Trigger, error) {
	fail := func(err error) (Elevation, Task, Trigger, error) {
		return Elevation{}, Task{}, Trigger{}, s.deny(ctx, *ev, err)
	}
	if err := ValidateElevationID(id); err != nil {
		return fail(err)
	}
	if reason == "" || len(reason) > maxText {
		return fail(fmt.Errorf("%w: a reason of 1 to %d bytes is required", fault.Invalid, maxText))
	}
	e, err := s.store.GetElevation(ctx, id)
	if errors.Is(err, fault.NotFound) {
		return fail(fmt.Errorf("%w: elevation %s", fault.NotFound, id))
	}
	if err != nil {
		return Elevation{}, Task{}, Trigger{}, unavailable(err)
	}
	ev.Target, ev.Task = e.Agent, e.Task
	ev.Detail["trigger"] = e.Trigger
	ev.Detail["manifest"] = e.Manifest
	if b.Elevation != e.ID || b.Task != e.Task {
		return fail(fmt.Errorf("%w: this decision is bound to elevation %s of task %s, not to %s of %s", fault.Forbidden, b.Elevation, b.Task, e.ID, e.Task))
	}
	now := ev.Time
	if e.Status == StatusPending && !now.Before(e.RequestExpiresAt) {
		s.expire(ctx, e, now, "the request lapsed unanswered")
		return fail(fmt.Errorf("%w: elevation %s lapsed at %s", fault.Conflict, id, e.RequestExpiresAt.UTC().Format(time.RFC3339)))
	}
	if e.Status != StatusPending {
		return fail(fmt.Errorf("%w: elevation %s is %s", fault.Conflict, id, e.Status))
	}
	t, err := s.store.GetTask(ctx, e.Task)
	if err != nil {
		return Elevation{}, Task{}, Trigger{}, unavailable(err)
	}
	if !t.OpenAt(now) {
		return fail(fmt.Errorf("%w: task %s is not open", fault.Conflict, e.Task))
	}
	ev.Detail["tainted"] = fmt.Sprint(t.Tainted)
	m, err := s.store.GetManifest(ctx, e.Manifest)
	if err != nil {
		return fail(fmt.Errorf("%w: manifest %s: %w", fault.Unavailable, e.Manifest, err))
	}
	tr, ok := m.Trigger(e.Trigger)
	if !ok {
		return fail(fmt.Errorf("%w: trigger %q is no longer in manifest %s", fault.Conflict, e.Trigger, e.Manifest))
	}
	// The task's taint now, not at the request, is what the approver
	// weighs.
	e.Tainted = t.Tainted
	return e, t, tr, nil
}

// Deny refuses a pending elevation, by an operator.
func (s *Service) Deny(ctx context.Context, by peer.Principal, id string, b Binding, reason string) (Elevation, error) {
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionDeny, Task: b.Task, Target: by.ID.String(),
		Detail: map[string]string{"elevation": id}}
	if reason != "" {
		ev.Reasons = []string{reason}
	}
	if by.Kind != audit.ActorOperator {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: only operators deny elevations", fault.Forbidden))
	}
	e, _, _, err := s.loadPending(ctx, &ev, id, b, reason)
	if err != nil {
		return Elevation{}, err
	}
	if err := s.act(ctx, ev, func() error {
		return s.store.SetStatus(ctx, id, []Status{StatusPending}, StatusDenied, now, by.ID.String(), reason)
	}); err != nil {
		return Elevation{}, unavailable(err)
	}
	e.Status, e.EndedAt, e.EndedBy, e.EndReason = StatusDenied, now, by.ID.String(), reason
	return e, nil
}

// Revoke ends a pending or active elevation at once, by an operator.
func (s *Service) Revoke(ctx context.Context, by peer.Principal, id, reason string) (Elevation, error) {
	now := s.clock.Now()
	if reason == "" {
		reason = "revoked by operator"
	}
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionRevoke, Target: by.ID.String(), Reasons: []string{reason},
		Detail: map[string]string{"elevation": id}}
	if by.Kind != audit.ActorOperator {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: only operators revoke elevations", fault.Forbidden))
	}
	if err := ValidateElevationID(id); err != nil {
		return Elevation{}, err
	}
	e, err := s.store.GetElevation(ctx, id)
	if err != nil {
		return Elevation{}, unavailable(err)
	}
	ev.Target, ev.Task = e.Agent, e.Task
	if e.Status != StatusPending && e.Status != StatusActive {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevation %s is %s already", fault.Conflict, id, e.Status))
	}
	if err := s.act(ctx, ev, func() error {
		return s.store.SetStatus(ctx, id, []Status{StatusPending, StatusActive}, StatusRevoked, now, by.ID.String(), reason)
	}); err != nil {
		return Elevation{}, unavailable(err)
	}
	e.Status, e.EndedAt, e.EndedBy, e.EndReason = StatusRevoked, now, by.ID.String(), reason
	return e, nil
}

// Use is a gateway's report that a call is allowed because of a grant.
type Use struct {
	Task       string
	Agent      string // the caller's SPIFFE ID
	Resource   string
	DecisionID string
}

// UseGrant spends one use of grant id for a call a gateway (by) is about
// to forward, atomically, and only if the grant is of the call's task, in
// force, and its task open. The call must not be forwarded unless this
// returns nil.
func (s *Service) UseGrant(ctx context.Context, by peer.Principal, id string, u Use) (Elevation, error) {
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionUse, Target: u.Agent, Task: u.Task,
		Detail: map[string]string{"elevation": id, "resource": u.Resource, "decision_id": u.DecisionID}}
	if by.Kind != audit.ActorWorkload {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: grants are used by gateways", fault.Forbidden))
	}
	if err := ValidateElevationID(id); err != nil {
		return Elevation{}, s.deny(ctx, ev, err)
	}
	e, err := s.store.GetElevation(ctx, id)
	if errors.Is(err, fault.NotFound) {
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevation %s", fault.NotFound, id))
	}
	if err != nil {
		return Elevation{}, s.deny(ctx, ev, unavailable(err))
	}
	ev.Detail["trigger"] = e.Trigger
	t, err := s.store.GetTask(ctx, e.Task)
	if err != nil {
		return Elevation{}, s.deny(ctx, ev, unavailable(err))
	}
	switch {
	case e.Task != u.Task:
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevation %s belongs to task %s, not %s", fault.Forbidden, id, e.Task, u.Task))
	case !inTask(t, u.Agent):
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: %s does not work in task %s", fault.Forbidden, u.Agent, e.Task))
	case !t.OpenAt(now):
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: task %s is %s: back to baseline", fault.Conflict, e.Task, taskState(t, now)))
	case e.Status != StatusActive:
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevation %s is %s", fault.Conflict, id, e.Status))
	case !now.Before(e.ExpiresAt):
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevation %s expired at %s", fault.Conflict, id, e.ExpiresAt.UTC().Format(time.RFC3339)))
	case e.MaxUses > 0 && e.Uses >= e.MaxUses:
		return Elevation{}, s.deny(ctx, ev, fmt.Errorf("%w: elevation %s has no uses left (%d of %d spent)", fault.Conflict, id, e.Uses, e.MaxUses))
	}
	ev.Detail["use"] = fmt.Sprint(e.Uses + 1)
	if e.MaxUses > 0 {
		ev.Detail["max_uses"] = fmt.Sprint(e.MaxUses)
	}
	var after Elevation
	if err := s.act(ctx, ev, func() error {
		var err error
		after, err = s.store.UseGrant(ctx, id, now)
		return err
	}); err != nil {
		return Elevation{}, unavailable(err)
	}
	if after.Status == StatusExhausted {
		s.after(ctx, audit.Event{Time: now, Actor: by.Actor(), Action: ActionExhaust, Target: e.Agent, Task: e.Task,
			Detail: map[string]string{"elevation": id, "trigger": e.Trigger, "uses": fmt.Sprint(after.Uses)}})
	}
	return after, nil
}

func taskState(t Task, now time.Time) string {
	if t.Status == TaskOpen && !now.Before(t.Deadline) {
		return string(TaskExpired)
	}
	return string(t.Status)
}

// Elevation returns an elevation to an operator, or to an agent working in
// its task.
func (s *Service) Elevation(ctx context.Context, by peer.Principal, id string) (Elevation, error) {
	if err := ValidateElevationID(id); err != nil {
		return Elevation{}, err
	}
	e, err := s.store.GetElevation(ctx, id)
	if err != nil {
		return Elevation{}, unavailable(err)
	}
	if by.Kind == audit.ActorAgent {
		t, err := s.store.GetTask(ctx, e.Task)
		if err != nil || !inTask(t, by.ID.String()) {
			return Elevation{}, fmt.Errorf("%w: elevation %s", fault.NotFound, id)
		}
	}
	return e, nil
}

// Elevations lists elevations; active keeps the grants in force now.
func (s *Service) Elevations(ctx context.Context, f Filter, active bool) ([]Elevation, error) {
	es, err := s.store.ListElevations(ctx, f)
	if err != nil {
		return nil, unavailable(err)
	}
	if !active {
		return es, nil
	}
	now := s.clock.Now()
	out := es[:0]
	for _, e := range es {
		if e.InForce(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Standing counts what is in force now.
type Standing struct {
	// Standing is the number of grants in force outside an open task:
	// zero by construction, which this measures rather than assumes.
	Standing int64
	// Active is the number of grants in force (all inside open tasks).
	Active int64
	// Pending is the number of requests awaiting approval.
	Pending   int64
	OpenTasks int64
}

// Standing measures standing privilege.
func (s *Service) Standing(ctx context.Context) (Standing, error) {
	now := s.clock.Now()
	var st Standing
	var err error
	if st.Standing, err = s.store.StandingGrants(ctx, now); err != nil {
		return st, unavailable(err)
	}
	es, err := s.store.ListElevations(ctx, Filter{Statuses: []Status{StatusPending, StatusActive}})
	if err != nil {
		return st, unavailable(err)
	}
	for _, e := range es {
		switch {
		case e.InForce(now):
			st.Active++
		case e.Status == StatusPending && now.Before(e.RequestExpiresAt):
			st.Pending++
		}
	}
	ts, err := s.store.ListTasks(ctx, true)
	if err != nil {
		return st, unavailable(err)
	}
	for _, t := range ts {
		if t.OpenAt(now) {
			st.OpenTasks++
		}
	}
	return st, nil
}

// TaskState is what a gateway needs to decide a task's requests.
type TaskState struct {
	Task     Task
	Open     bool
	Limits   Limits
	Grants   []Elevation // in force now
	Checked  time.Time
	Manifest string
}

// State returns a task's live state for a gateway.
func (s *Service) State(ctx context.Context, id string) (TaskState, error) {
	if err := ValidateTaskID(id); err != nil {
		return TaskState{}, err
	}
	t, err := s.store.GetTask(ctx, id)
	if err != nil {
		return TaskState{}, unavailable(err)
	}
	now := s.clock.Now()
	st := TaskState{Task: t, Open: t.OpenAt(now), Checked: now, Manifest: t.Manifest}
	if !st.Open {
		return st, nil
	}
	m, err := s.store.GetManifest(ctx, t.Manifest)
	if err != nil {
		return TaskState{}, unavailable(err)
	}
	st.Limits = m.ScopeLimits
	es, err := s.store.ListElevations(ctx, Filter{Task: id, Statuses: []Status{StatusActive}})
	if err != nil {
		return TaskState{}, unavailable(err)
	}
	for _, e := range es {
		if e.InForce(now) {
			st.Grants = append(st.Grants, e)
		}
	}
	return st, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
