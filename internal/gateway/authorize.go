package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// action is one request to authorize: an MCP message or an HTTP route.
type action struct {
	server   *Server
	name     string // the Cedar action; "" when the request needs no decision
	resource cedar.EntityUID
	// input is context.input as canonical JSON: the same parsed value
	// whose encoding is forwarded.
	input []byte
	// metered requests count against budgets and may taint a task.
	metered bool
	// detail goes into every record of this request.
	detail map[string]string
	// cont, when set, makes this request the next round of a call an
	// upstream answered with input_required (MRTR): it is decided again,
	// since its arguments may differ, with the grants that allowed the
	// first round, but counted against budgets and grants only once.
	cont *round
}

// authorized is what allowed a request.
type authorized struct {
	decisionID string
	grants     []string // the names of the grants that allowed it
	granted    []TaskGrant
	// record, for a call the catalog declares read-only, is its decision
	// record still being written: the call may be forwarded meanwhile,
	// but no answer is released until it is durable.
	record *pendingRecord
	// spend is what the call spends budgets for; its answer's bytes too.
	spend use
}

// pendingRecord is a decision record written while its call is
// forwarded. It belongs to the request's goroutine.
type pendingRecord struct {
	done   chan error
	err    error
	waited bool
}

// recordAsync starts writing a decision record.
func recordAsync(write func() error) *pendingRecord {
	p := &pendingRecord{done: make(chan error, 1)}
	go func() { p.done <- write() }()
	return p
}

// wait returns once the record is durable, or why it is not. A nil
// pendingRecord is a record already written.
func (p *pendingRecord) wait() error {
	if p == nil {
		return nil
	}
	if !p.waited {
		p.err, p.waited = <-p.done, true
	}
	return p.err
}

// refusal is why a request was not forwarded. Its error wraps a fault
// kind, which decides the status on every surface.
type refusal struct {
	err        error
	decisionID string
	// msg is the client's text without the kind's name, for surfaces
	// (JSON-RPC) that carry the kind in a code of their own.
	msg string
}

func refuse(kind error, decisionID, format string, args ...any) *refusal {
	msg := fmt.Sprintf(format, args...)
	return &refusal{err: fmt.Errorf("%w: %s", kind, msg), decisionID: decisionID, msg: msg}
}

// authorize is the one enforcement pipeline, for MCP and HTTP alike. In
// order: decide; write the decision record, durably (a denial too, but a
// denial is refused whether or not its record lands); count the call
// against budgets; spend the grant that allowed it; mark the task tainted
// if the tool's output is untrusted. Nothing is counted, spent or
// forwarded unless the allow record is durable, and each later refusal is
// recorded beside it (after it). The one exception is a call the catalog
// declares read-only (effects: read, never the upstream's own word): its
// record is written while the rest goes on and the call is forwarded, and
// authorized.record holds back the answer until the record is durable. A
// read that is never recorded then never reached the agent, and changed
// nothing. It returns a nil refusal when the request may be forwarded.
func (g *Gateway) authorize(ctx context.Context, c *caller, a action) (authorized, *refusal) {
	if a.name == "" {
		return authorized{}, nil
	}
	if a.cont != nil {
		c.carried = a.cont.grants
		a.detail = withDetail(withDetail(a.detail, "call", a.cont.call), "round", strconv.Itoa(a.cont.n+1))
	}
	d, latency, err := g.decideCall(ctx, c, a.name, a.resource, a.input)
	var reasons []string
	if err != nil {
		reasons, d.Allowed = []string{"decision failed: " + err.Error()}, false
	}
	extra := a.detail
	var grants []TaskGrant
	if d.Allowed && a.cont == nil {
		grants, err = g.grantsFor(c, d.Reasons)
		if err != nil {
			reasons, d.Allowed = []string{"grant not usable: " + err.Error()}, false
		} else if len(grants) > 0 {
			extra = withDetail(extra, "grant", grantIDs(grants))
		}
	}
	if a.cont == nil {
		// One observation per call: a next round (MRTR) is the same call.
		g.observeRisk(ctx, c, a.server.Name, a.name, a.resource, d.ID, !d.Allowed, c.risk)
	}
	if !d.Allowed {
		if rec := g.recordDecision(ctx, c, a.server.Name, a.name, a.resource, a.input, d, latency, reasons, extra); rec != nil {
			g.logger.Error("could not record a denial", "err", rec)
		}
		if c.claims.Task != "" && c.task == nil {
			// Say why the grants the agent may expect no longer apply.
			return authorized{}, refuse(fault.Forbidden, d.ID, "denied by policy: task %s has ended, so this call was decided at the agent's baseline", c.claims.Task)
		}
		return authorized{}, refuse(fault.Forbidden, d.ID, "denied by policy")
	}
	ok := authorized{decisionID: d.ID, spend: g.spendOf(c, a, d)}
	record := func() error {
		return g.recordDecision(ctx, c, a.server.Name, a.name, a.resource, a.input, d, latency, nil, extra)
	}
	if d.ReadOnly {
		ok.record = recordAsync(record)
	} else if err := record(); err != nil {
		// Write first: nothing below happens unless this record is durable.
		g.logger.Error("could not record an allowed call; refusing", "err", err)
		return authorized{}, refuse(fault.Unavailable, d.ID, "refused: the audit log is unavailable")
	}
	// A refusal below is recorded after the decision it refuses.
	settle := func() { _ = ok.record.wait() }
	for _, gr := range grants {
		ok.grants = append(ok.grants, gr.Name)
	}
	ok.granted = grants
	if a.cont != nil {
		// The next round of a call already counted: taint only.
		ok.decisionID, ok.grants = a.cont.call, a.cont.grants
		if err := g.taint(ctx, c, a.resource); err != nil {
			settle()
			g.recordRefusal(ctx, c, "gateway.taint", a.resource.String(), "the task's taint could not be recorded", withDetail(a.detail, "decision_id", d.ID))
			return authorized{}, refuse(fault.Unavailable, d.ID, "refused: the task's taint could not be recorded")
		}
		return ok, nil
	}
	var adm *admission
	if a.metered {
		adm, err = g.budgets.admit(ctx, ok.spend)
		var spent limitError
		switch {
		case errors.As(err, &spent):
			settle()
			g.recordRefusal(ctx, c, "gateway.budget", a.resource.String(), err.Error(), withDetail(a.detail, "decision_id", d.ID))
			return authorized{}, refuse(fault.Exhausted, d.ID, "%s", err.Error())
		case err != nil:
			settle()
			g.logger.Error("could not spend a call's budgets; refusing", "err", err)
			g.recordRefusal(ctx, c, "gateway.budget", a.resource.String(), err.Error(), withDetail(a.detail, "decision_id", d.ID))
			return authorized{}, refuse(fault.Unavailable, d.ID, "refused: the budgets could not be checked")
		}
	}
	if len(grants) > 0 {
		if err := g.spendGrant(ctx, c, grants, a.resource, d.ID); err != nil {
			settle()
			if err := adm.refund(ctx); err != nil {
				g.logger.Warn("could not give back a call that was not forwarded", "err", err)
			}
			g.recordRefusal(ctx, c, "gateway.grant", a.resource.String(), "grant not usable: "+err.Error(), withDetail(a.detail, "decision_id", d.ID))
			return authorized{}, refuse(fault.Forbidden, d.ID, "denied: the grant that allowed this call is no longer usable")
		}
	}
	if a.metered {
		if err := g.taint(ctx, c, a.resource); err != nil {
			g.logger.Warn("could not record a task's taint; refusing", "task", c.taskID(), "err", err)
			settle()
			// Not forwarded: give back what it spent (the grant's use
			// stays spent; the control plane keeps that count).
			if err := adm.refund(ctx); err != nil {
				g.logger.Warn("could not give back a call that was not forwarded", "err", err)
			}
			g.recordRefusal(ctx, c, "gateway.taint", a.resource.String(), "the task's taint could not be recorded", withDetail(a.detail, "decision_id", d.ID))
			return authorized{}, refuse(fault.Unavailable, d.ID, "refused: the task's taint could not be recorded")
		}
	}
	return ok, nil
}

// spendOf is what an allowed call spends budgets for: the server's, the
// task's, and, when the decision says its resource's sensitivity is at
// the gateway's sensitive level, the sensitive limits, counting the
// resource with its arguments as one touched.
func (g *Gateway) spendOf(c *caller, a action, d policy.Decision) use {
	u := use{s: a.server, agent: c.id.String(), task: c.taskID(), lim: c.taskLimits()}
	if g.cfg.Sensitive.counts(d.Sensitivity) {
		// Counted for the delegation's root: a sub-agent spends its
		// parent's budget, so delegating buys no fresh one.
		u.sensitive, u.root = true, identity.Root(u.agent)
		u.resource = audit.Digest(append([]byte(a.resource.String()+"\n"), a.input...))
		u.day = g.deps.Clock.Now().UTC().Format(time.DateOnly)
	}
	return u
}

// withDetail returns a copy of m with k set to v.
func withDetail(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for mk, mv := range m {
		out[mk] = mv
	}
	out[k] = v
	return out
}

// grantsFor returns the grants in force that may have allowed a call: any
// decision reason that is a manifest trigger's permit names one. None
// means no grant was involved; an error means a grant allowed the call but
// none is usable.
func (g *Gateway) grantsFor(c *caller, reasons []string) ([]TaskGrant, error) {
	var names []string
	for _, r := range reasons {
		if m, t, ok := elevation.ParseTriggerPolicyID(r); ok {
			names = append(names, elevation.GrantName(m, t))
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	if c.task == nil || g.tasks == nil {
		return nil, errors.New("a grant allowed the call outside an open task")
	}
	now := g.deps.Clock.Now()
	var out []TaskGrant
	for _, name := range names {
		for _, gr := range c.task.Grants {
			if gr.Name == name && now.Before(gr.ExpiresAt) {
				out = append(out, gr)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no grant %v is in force", names)
	}
	return out, nil
}

func grantIDs(grants []TaskGrant) string {
	ids := make([]string, len(grants))
	for i, gr := range grants {
		ids[i] = gr.Elevation
	}
	return strings.Join(ids, " ")
}

// spendGrant spends, at the control plane, one use of the first of grants
// that still has one.
func (g *Gateway) spendGrant(ctx context.Context, c *caller, grants []TaskGrant, resource cedar.EntityUID, decisionID string) error {
	var last error
	for _, gr := range grants {
		err := g.tasks.src.UseGrant(ctx, gr.Elevation, GrantUse{Task: c.task.ID, Agent: c.id.String(), Resource: resource.String(), DecisionID: decisionID})
		// Uses changed (or the grant ended): read the state anew.
		g.tasks.forget(c.task.ID)
		if err == nil {
			if gr.MaxUses > 0 && gr.Uses+1 >= gr.MaxUses {
				// This call spent its last use: it still counts for the
				// call (see recheck).
				g.streams.exhausted(gr.Elevation)
			}
			return nil
		}
		last = err
	}
	return last
}

// decide asks the PDP, with the request's risk (kept as c.risk); any
// error denies.
func (g *Gateway) decide(ctx context.Context, c *caller, action string, resource cedar.EntityUID, input json.RawMessage) (policy.Decision, time.Duration, error) {
	start := time.Now()
	q := Decision{Agent: c.id, Action: action, Resource: resource, Input: input}
	if c.task != nil {
		q.Task, q.Manifest, q.Tainted, q.Grants = c.task.ID, c.task.Manifest, c.task.Tainted, c.grantNames(g.deps.Clock.Now())
	}
	c.risk = g.riskOf(ctx, c, resource, input)
	q.Risk, q.RiskReasons = c.risk.Score, c.risk.Reasons
	if c.claims.Attestation != nil {
		q.Attestation = *c.claims.Attestation
	}
	d, err := g.deps.Decider.Decide(ctx, q)
	if err == nil {
		g.sawVersion(d.Version)
	}
	return d, time.Since(start), err
}

// recordDecision writes a decision record: the agent, task, server,
// resource, a digest of the arguments, the outcome with the determining
// policy ids and version, and the decision latency.
func (g *Gateway) recordDecision(ctx context.Context, c *caller, server, action string, resource cedar.EntityUID, input []byte, d policy.Decision, latency time.Duration, reasons []string, extra map[string]string) error {
	decision := audit.Deny
	if d.Allowed && len(reasons) == 0 {
		decision = audit.Allow
	}
	detail := map[string]string{"gateway": g.cfg.Name, "server": server, "decision_id": d.ID,
		"policy_version": strconv.FormatInt(d.Version, 10), "latency_us": strconv.FormatInt(latency.Microseconds(), 10)}
	for k, v := range extra {
		detail[k] = v
	}
	if c.risk.Score > 0 || len(c.risk.Reasons) > 0 {
		riskDetail(detail, c.risk)
	}
	if c.shape != "" {
		detail["shape"] = c.shape
	}
	if c.claims.Attestation != nil {
		detail["attestation"] = c.claims.Attestation.String()
	}
	if age, stale := g.deps.Revocations.Stale(); stale {
		// Decided while no control plane answered the feed: a revocation
		// made in that time may not have been applied yet.
		detail["cached_state_age_ms"] = strconv.FormatInt(age.Milliseconds(), 10)
	}
	if c.claims.Task != "" {
		detail["task_open"] = strconv.FormatBool(c.task != nil)
		if c.task != nil {
			detail["manifest"], detail["tainted"] = c.task.Manifest, strconv.FormatBool(c.task.Tainted)
			if gs := c.grantNames(g.deps.Clock.Now()); len(gs) > 0 {
				detail["grants"] = strings.Join(gs, " ")
			}
		}
	}
	ev := audit.Event{Actor: c.actor(), Action: "gateway." + action, Target: resource.String(), Decision: decision,
		Reasons: append(append([]string(nil), d.Reasons...), reasons...), Task: c.claims.Task, Detail: detail}
	if input != nil {
		ev.Digests = map[string]string{"arguments": audit.Digest(input)}
	}
	_, err := g.deps.Audit.Record(ctx, ev)
	return err
}
