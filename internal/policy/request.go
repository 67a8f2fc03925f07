package policy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Decider makes authorization decisions; the gateway calls it for every
// action an agent takes. *PDP implements it.
type Decider interface {
	Decide(ctx context.Context, req Request) (Decision, error)
}

// Request is one action to authorize: principal (an Agent), action and
// resource, with the context policies may read.
type Request struct {
	Principal cedar.EntityUID // e.g. Agent(spiffeID)
	Action    cedar.EntityUID // e.g. Action(ActionCallTool)
	Resource  cedar.EntityUID // e.g. Tool("docs", "search")
	Context   Context
	// Entities are entities of operator-defined types the request refers
	// to. Entities of Bulkhead's own types come only from its store.
	Entities []cedar.Entity
}

// Context is what policies read as context. The PDP adds time.
type Context struct {
	// Task is the id of the task the action is for; empty for none.
	Task string
	// Manifest names the task's manifest; empty for none. A request that
	// names one is also evaluated against that manifest's policies.
	Manifest string
	// Risk is the agent's risk score, 0 to 100, and RiskReasons the
	// codes of what raised it.
	Risk        int64
	RiskReasons []string
	// Tainted says the session has read untrusted output.
	Tainted bool
	// Grants names the elevations in force.
	Grants []string
	// Attestation is what was proven about the key of the certificate the
	// request came with; the zero value is an unattested software key.
	Attestation attestation.Claims
	// Input is the tool call's arguments (see InputFromJSON); the zero
	// Record is no arguments.
	Input cedar.Record
	// Extra holds attributes of an operator's own schema. It may not set
	// the attributes above.
	Extra cedar.RecordMap
}

// Decision is the PDP's answer.
type Decision struct {
	// ID names this decision in the audit log and shadow reports.
	ID      string
	Allowed bool
	// Reasons are the ids of the policies that determined the decision:
	// the permits behind an allow, the forbids behind a deny; none for a
	// deny by default or by error.
	Reasons []string
	// Errors are policies that failed to evaluate; any error denies.
	Errors []EvalError
	// Version is the policy version that decided (0: no policy was ever
	// applied, and everything is denied).
	Version int64
	// ReadOnly says an allowed request's resource is declared effects:
	// read in the catalog the decision used.
	ReadOnly bool
	// Sensitivity is an allowed request's resource's sensitivity in that
	// catalog (low, medium, high); empty for a resource it lacks.
	Sensitivity string
}

// EvalError is a policy that failed to evaluate for a request.
type EvalError struct {
	PolicyID string `json:"policy_id"`
	Message  string `json:"message"`
}

// prepared is a request in Cedar's terms, ready for any policy set once
// the PDP has set the time (see build).
type prepared struct {
	principal, action, resource cedar.EntityUID
	ctx                         cedar.RecordMap // owned; build adds time
	extra                       []cedar.Entity
	view                        view // reused by decide
}

// build returns the Cedar request, with time set to now: the time of a
// decision is the PDP's, whatever a caller says.
func (p *prepared) build(now time.Time) cedar.Request {
	p.ctx[ctxTime] = cedar.NewDatetime(now)
	return cedar.Request{Principal: p.principal, Action: p.action, Resource: p.resource, Context: cedar.NewRecord(p.ctx)}
}

// Context attribute names the PDP sets or checks.
const (
	ctxTask     = "task"
	ctxManifest = "manifest"
	ctxRisk     = "risk"
	ctxRiskWhy  = "risk_reasons"
	ctxTainted  = "tainted"
	ctxTime     = "time"
	ctxGrants   = "grants"
	ctxInput    = "input"
	ctxAttest   = "attestation"
)

func (r Request) prepare() (*prepared, error) {
	pr := &prepared{ctx: make(cedar.RecordMap, len(r.Context.Extra)+7)}
	return pr, r.prepareInto(pr)
}

// preparedPool recycles the prepared requests of Decide: NewRecord copies
// the context map, so it can be refilled for the next request.
var preparedPool = sync.Pool{New: func() any { return &prepared{ctx: make(cedar.RecordMap, 8)} }}

func (p *prepared) release() {
	clear(p.ctx)
	p.extra = nil
	p.view.reset(nil)
	preparedPool.Put(p)
}

func (r Request) prepareInto(pr *prepared) error {
	if err := checkUID("principal", r.Principal); err != nil {
		return err
	}
	if err := checkUID("action", r.Action); err != nil {
		return err
	}
	if err := checkUID("resource", r.Resource); err != nil {
		return err
	}
	if r.Context.Risk < 0 || r.Context.Risk > 100 {
		return fmt.Errorf("%w: risk %d is outside 0-100", fault.Invalid, r.Context.Risk)
	}
	m := pr.ctx
	for k, v := range r.Context.Extra {
		switch k {
		case ctxTask, ctxManifest, ctxRisk, ctxRiskWhy, ctxTainted, ctxTime, ctxGrants, ctxInput, ctxAttest:
			return fmt.Errorf("%w: context attribute %q is set by its own field", fault.Invalid, k)
		}
		m[k] = v
	}
	if r.Context.Task != "" {
		m[ctxTask] = cedar.NewEntityUID(TypeTask, cedar.String(r.Context.Task))
	}
	if r.Context.Manifest != "" {
		m[ctxManifest] = cedar.String(r.Context.Manifest)
	}
	m[ctxRisk] = cedar.Long(r.Context.Risk)
	m[ctxRiskWhy] = stringSet(r.Context.RiskReasons)
	m[ctxTainted] = cedar.Boolean(r.Context.Tainted)
	m[ctxGrants] = stringSet(r.Context.Grants)
	m[ctxInput] = r.Context.Input
	m[ctxAttest] = attestationRecord(r.Context.Attestation)
	for _, e := range r.Entities {
		if managed[e.UID.Type] || isActionType(e.UID.Type) {
			return fmt.Errorf("%w: entities of type %s come from Bulkhead's store, not the request", fault.Invalid, e.UID.Type)
		}
	}
	pr.principal, pr.action, pr.resource, pr.extra = r.Principal, r.Action, r.Resource, r.Entities
	return nil
}

// noStrings is the (immutable) empty set, shared, and boxed once.
var noStrings cedar.Value = cedar.NewSet()

// stringSet is ss as a Cedar set of strings.
// attestationRecord is context.attestation.
func attestationRecord(c attestation.Claims) cedar.Value {
	c = c.Normal()
	return cedar.NewRecord(cedar.RecordMap{"protection": cedar.String(c.Protection), "method": cedar.String(c.Method),
		"ek": cedar.String(c.EK), "lineage_depth": cedar.Long(c.Depth)})
}

func stringSet(ss []string) cedar.Value {
	if len(ss) == 0 {
		return noStrings
	}
	vs := make([]cedar.Value, len(ss))
	for i, s := range ss {
		vs[i] = cedar.String(s)
	}
	return cedar.NewSet(vs...)
}

func checkUID(what string, uid cedar.EntityUID) error {
	if uid.Type == "" {
		return fmt.Errorf("%w: %s is missing", fault.Invalid, what)
	}
	return nil
}
