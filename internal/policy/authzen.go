package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// AuthZEN evaluation semantics (Access Evaluations, options.evaluations_semantic).
const (
	ExecuteAll          = "execute_all"
	DenyOnFirstDeny     = "deny_on_first_deny"
	PermitOnFirstPermit = "permit_on_first_permit"
)

// MaxAuthZENBody bounds an AuthZEN request body; tool arguments make up
// most of it.
const MaxAuthZENBody = 1 << 20

// maxEvaluations bounds the items of one Access Evaluations request.
const maxEvaluations = 1000

// authzenItem is one evaluation of an AuthZEN request: a request ready to
// decide, or why it cannot be.
type authzenItem struct {
	pr  *prepared
	err error
	// task and digest go into the audit record.
	task   string
	digest string
}

// authzenBatch is a parsed AuthZEN request.
type authzenBatch struct {
	items    []authzenItem
	semantic string
	single   bool // no evaluations array: answer with one decision
}

// parseAuthZEN parses an AuthZEN Access Evaluation or Access Evaluations
// request body into Cedar requests. A malformed body is an error; a
// malformed item of a batch is an item error (answered with a deny).
func parseAuthZEN(body []byte) (*authzenBatch, error) {
	if len(body) > MaxAuthZENBody {
		return nil, fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, MaxAuthZENBody)
	}
	var top api.AuthZENRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("%w: body is not an AuthZEN evaluation request: %w", fault.Invalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: body holds more than one JSON value", fault.Invalid)
	}
	b := &authzenBatch{semantic: ExecuteAll}
	if top.Options != nil && top.Options.EvaluationsSemantic != "" {
		switch s := top.Options.EvaluationsSemantic; s {
		case ExecuteAll, DenyOnFirstDeny, PermitOnFirstPermit:
			b.semantic = s
		default:
			return nil, fmt.Errorf("%w: unknown evaluations_semantic %q", fault.Invalid, s)
		}
	}
	if len(top.Evaluations) == 0 {
		b.single = true
		it := authzenEval(top)
		if it.err != nil {
			return nil, it.err
		}
		b.items = []authzenItem{it}
		return b, nil
	}
	if len(top.Evaluations) > maxEvaluations {
		return nil, fmt.Errorf("%w: at most %d evaluations per request", fault.Invalid, maxEvaluations)
	}
	for _, e := range top.Evaluations {
		if len(e.Evaluations) > 0 || e.Options != nil {
			b.items = append(b.items, authzenItem{err: fmt.Errorf("%w: an evaluation may not nest evaluations or options", fault.Invalid)})
			continue
		}
		// An item's members replace the defaults whole.
		if e.Subject == nil {
			e.Subject = top.Subject
		}
		if e.Action == nil {
			e.Action = top.Action
		}
		if e.Resource == nil {
			e.Resource = top.Resource
		}
		if e.Context == nil {
			e.Context = top.Context
		}
		b.items = append(b.items, authzenEval(e))
	}
	return b, nil
}

func authzenEval(r api.AuthZENRequest) authzenItem {
	pr, task, err := authzenRequest(r)
	if err != nil {
		return authzenItem{err: err}
	}
	return authzenItem{pr: pr, task: task, digest: audit.Digest(r.Context)}
}

func authzenRequest(r api.AuthZENRequest) (*prepared, string, error) {
	if r.Subject == nil || r.Action == nil || r.Resource == nil {
		return nil, "", fmt.Errorf("%w: subject, action and resource are required", fault.Invalid)
	}
	pr := &prepared{}
	var err error
	if pr.principal, err = authzenEntity(pr, "subject", *r.Subject); err != nil {
		return nil, "", err
	}
	if pr.resource, err = authzenEntity(pr, "resource", *r.Resource); err != nil {
		return nil, "", err
	}
	if pr.action, err = authzenAction(r.Action.Name); err != nil {
		return nil, "", err
	}
	var task string
	if pr.ctx, task, err = authzenContext(r.Context); err != nil {
		return nil, "", err
	}
	return pr, task, nil
}

func authzenEntity(pr *prepared, what string, e api.AuthZENEntity) (cedar.EntityUID, error) {
	if e.Type == "" || e.ID == "" {
		return cedar.EntityUID{}, fmt.Errorf("%w: %s.type and %s.id are required", fault.Invalid, what, what)
	}
	t, err := newEntityType(e.Type)
	if err != nil {
		return cedar.EntityUID{}, fmt.Errorf("%s.type: %w", what, err)
	}
	if isActionType(t) {
		return cedar.EntityUID{}, fmt.Errorf("%w: %s.type may not be an action type", fault.Invalid, what)
	}
	uid := cedar.NewEntityUID(t, cedar.String(e.ID))
	if t == TypeAgent {
		if _, ok := parseAgentID(e.ID); !ok {
			return cedar.EntityUID{}, fmt.Errorf("%w: an Agent's id is its SPIFFE ID (spiffe://TRUST-DOMAIN/agent/NAME), not %q", fault.Invalid, e.ID)
		}
	}
	// Bulkhead's store is the only source of its own entities; properties
	// describe entities of the operator's own types.
	if managed[t] || len(bytes.TrimSpace(e.Properties)) == 0 || string(bytes.TrimSpace(e.Properties)) == "null" {
		return uid, nil
	}
	v, err := decodeJSON(e.Properties)
	if err != nil {
		return cedar.EntityUID{}, fmt.Errorf("%s.properties: %w", what, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return cedar.EntityUID{}, fmt.Errorf("%w: %s.properties must be an object", fault.Invalid, what)
	}
	attrs, err := toCedar(v, true, 0)
	if err != nil {
		return cedar.EntityUID{}, fmt.Errorf("%s.properties: %w", what, err)
	}
	for _, x := range pr.extra {
		if x.UID == uid {
			// Subject and resource are the same entity: keep the first.
			return uid, nil
		}
	}
	pr.extra = append(pr.extra, cedar.Entity{UID: uid, Attributes: attrs.(cedar.Record)})
	return uid, nil
}

func authzenAction(name string) (cedar.EntityUID, error) {
	if name == "" {
		return cedar.EntityUID{}, fmt.Errorf("%w: action.name is required", fault.Invalid)
	}
	if !strings.Contains(name, "::") {
		return Action(name), nil
	}
	uid, err := parseEntityUID(name)
	if err != nil || !isActionType(uid.Type) {
		return cedar.EntityUID{}, fmt.Errorf("%w: action.name %q is neither an action id nor an action reference like NS::Action::\"x\"", fault.Invalid, name)
	}
	return uid, nil
}

// authzenContext converts an AuthZEN context to Cedar's. input is tool
// arguments (plain data, no escapes); task may be a Task id; time is the
// PDP's own and is replaced. Missing input, grants and risk_reasons are empty.
func authzenContext(raw json.RawMessage) (cedar.RecordMap, string, error) {
	m := cedar.RecordMap{}
	task := ""
	if t := bytes.TrimSpace(raw); len(t) > 0 && string(t) != "null" {
		v, err := decodeJSON(t)
		if err != nil {
			return nil, "", fmt.Errorf("context: %w", err)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, "", fmt.Errorf("%w: context must be an object", fault.Invalid)
		}
		for k, e := range obj {
			if e == nil || k == ctxTime {
				continue
			}
			var cv cedar.Value
			switch k {
			case ctxAttest:
				c, ok := claimsOf(e)
				if !ok {
					return nil, "", fmt.Errorf("%w: context.attestation must be an object of protection, method and ek strings", fault.Invalid)
				}
				cv = attestationRecord(c)
			case ctxInput:
				if _, ok := e.(map[string]any); !ok {
					return nil, "", fmt.Errorf("%w: context.input must be an object of tool arguments", fault.Invalid)
				}
				cv, err = toCedar(e, false, 1)
			case ctxTask:
				if id, ok := e.(string); ok {
					task, cv = id, cedar.NewEntityUID(TypeTask, cedar.String(id))
					break
				}
				cv, err = toCedar(e, true, 1)
				if uid, ok := cv.(cedar.EntityUID); ok && uid.Type == TypeTask {
					task = string(uid.ID)
				}
			default:
				cv, err = toCedar(e, true, 1)
			}
			if err != nil {
				return nil, "", fmt.Errorf("context.%s: %w", k, err)
			}
			m[cedar.String(k)] = cv
		}
	}
	if r, ok := m[ctxRisk]; ok {
		if l, isLong := r.(cedar.Long); !isLong || l < 0 || l > 100 {
			return nil, "", fmt.Errorf("%w: context.risk must be an integer from 0 to 100", fault.Invalid)
		}
	}
	if _, ok := m[ctxInput]; !ok {
		m[ctxInput] = cedar.NewRecord(nil)
	}
	if _, ok := m[ctxGrants]; !ok {
		m[ctxGrants] = cedar.NewSet()
	}
	if _, ok := m[ctxRiskWhy]; !ok {
		m[ctxRiskWhy] = cedar.NewSet()
	}
	if _, ok := m[ctxAttest]; !ok {
		m[ctxAttest] = attestationRecord(attestation.Claims{})
	}
	return m, task, nil
}

// claimsOf reads an AuthZEN context.attestation object.
func claimsOf(v any) (attestation.Claims, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return attestation.Claims{}, false
	}
	var c attestation.Claims
	for k, f := range map[string]*string{"protection": &c.Protection, "method": &c.Method, "ek": &c.EK} {
		switch s := obj[k].(type) {
		case string:
			*f = s
		case nil:
		default:
			return attestation.Claims{}, false
		}
	}
	switch d := obj["lineage_depth"].(type) {
	case nil:
	case json.Number:
		n, err := d.Int64()
		if err != nil || n < 0 || n > 64 {
			return attestation.Claims{}, false
		}
		c.Depth = int(n)
	default:
		return attestation.Claims{}, false
	}
	return c, len(obj) <= 4
}

// evaluateAuthZEN decides each item of b under its semantics and records
// every decision in the audit log before answering: if a record cannot be
// written, the whole request fails (and its caller must deny).
func (s *Service) evaluateAuthZEN(ctx context.Context, by audit.Actor, b *authzenBatch) ([]api.AuthZENDecision, error) {
	out := make([]api.AuthZENDecision, 0, len(b.items))
	events := make([]audit.Event, 0, len(b.items))
	for _, it := range b.items {
		if it.err != nil {
			// The same mapping as the HTTP edge: the caller reads its own
			// mistakes, and only a fixed text for the server's.
			status, _, text := httpx.Problem(it.err)
			if status >= http.StatusInternalServerError {
				s.logger.Error("authzen evaluation failed", "err", it.err)
			}
			out = append(out, api.AuthZENDecision{Context: &api.AuthZENDecisionContext{Error: &api.AuthZENError{Status: status, Message: text}}})
		} else {
			d, req, err := s.decide(it.pr)
			if err != nil {
				return nil, err
			}
			dc := &api.AuthZENDecisionContext{ID: d.ID, PolicyVersion: d.Version, Reasons: d.Reasons, ReadOnly: d.ReadOnly, Sensitivity: d.Sensitivity}
			for _, e := range d.Errors {
				dc.Errors = append(dc.Errors, e.PolicyID+": "+e.Message)
			}
			out = append(out, api.AuthZENDecision{Decision: d.Allowed, Context: dc})
			events = append(events, decisionEvent(by, d, req, it))
		}
		last := out[len(out)-1].Decision
		if b.semantic == DenyOnFirstDeny && !last || b.semantic == PermitOnFirstPermit && last {
			break
		}
	}
	// Concurrent records share the audit log's group commits.
	errs := make(chan error, len(events))
	var wg sync.WaitGroup
	for _, ev := range events {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.audit.Record(ctx, ev)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%w: decision not recorded in the audit log; refusing to answer", fault.Unavailable)
		}
	}
	return out, nil
}

func decisionEvent(by audit.Actor, d Decision, req cedar.Request, it authzenItem) audit.Event {
	target := req.Principal.String()
	if req.Principal.Type == TypeAgent {
		// Identity records name agents by SPIFFE ID; so do decisions, so
		// that one search finds an agent's whole story.
		target = string(req.Principal.ID)
	}
	ev := audit.Event{Time: req.Context.Map()[ctxTime].(cedar.Datetime).Time(), Actor: by, Action: ActionDecision,
		Target: target, Decision: audit.Deny, Task: it.task,
		Reasons: append([]string(nil), d.Reasons...),
		Digests: map[string]string{"context": it.digest},
		Detail: map[string]string{"decision_id": d.ID, "policy_version": fmt.Sprint(d.Version),
			"principal": req.Principal.String(), "action": req.Action.String(), "resource": req.Resource.String()}}
	if d.Allowed {
		ev.Decision = audit.Allow
	}
	for _, e := range d.Errors {
		ev.Reasons = append(ev.Reasons, "error in "+e.PolicyID+": "+e.Message)
	}
	return ev
}
