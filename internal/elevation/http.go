package elevation

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Routes registers the elevation API on mux. Agents open and complete
// their tasks and request elevations with their SVID; operators (humans)
// apply manifests and approve, deny, list and revoke elevations;
// gateways (workloads) read task state, report output and use grants.
// Agents may reach the approval endpoint only so that their attempt is
// refused, and recorded, by the service itself.
func (s *Service) Routes(mux *http.ServeMux, guard peer.Guard, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	kinds := func(f http.HandlerFunc, ks ...audit.ActorKind) http.Handler {
		return guard.Require(peer.Kinds(ks...), f)
	}
	op, ag, gw := audit.ActorOperator, audit.ActorAgent, audit.ActorWorkload
	mux.Handle("POST /v1/manifests", kinds(h.applyManifest, op))
	mux.Handle("GET /v1/manifests", kinds(h.listManifests, op))
	mux.Handle("GET /v1/manifests/{name}", kinds(h.getManifest, op))

	mux.Handle("POST /v1/tasks", kinds(h.startTask, ag))
	mux.Handle("GET /v1/tasks", kinds(h.listTasks, op))
	mux.Handle("GET /v1/tasks/{id}", kinds(h.getTask, ag, op, gw))
	mux.Handle("POST /v1/tasks/{id}/complete", kinds(h.endTask(TaskCompleted), ag))
	mux.Handle("POST /v1/tasks/{id}/cancel", kinds(h.endTask(TaskCancelled), ag, op))
	mux.Handle("GET /v1/tasks/{id}/state", kinds(h.taskState, gw, op))
	mux.Handle("POST /v1/tasks/{id}/output", kinds(h.taskOutput, gw))

	mux.Handle("POST /v1/elevations", kinds(h.request, ag))
	mux.Handle("GET /v1/elevations", kinds(h.list, op))
	mux.Handle("GET /v1/elevations/standing", kinds(h.standing, op, gw))
	mux.Handle("GET /v1/elevations/metrics", kinds(h.metrics, op, gw))
	mux.Handle("GET /v1/elevations/approval-policy", kinds(h.getApprovalPolicy, op))
	mux.Handle("PUT /v1/elevations/approval-policy", kinds(h.putApprovalPolicy, op))
	mux.Handle("GET /v1/elevations/{id}", kinds(h.get, ag, op))
	mux.Handle("POST /v1/elevations/{id}/approve", kinds(h.approve, op, ag))
	mux.Handle("POST /v1/elevations/{id}/deny", kinds(h.deny, op))
	mux.Handle("POST /v1/elevations/{id}/revoke", kinds(h.revoke, op))
	mux.Handle("POST /v1/elevations/{id}/use", kinds(h.use, gw))
}

type handlers struct {
	s      *Service
	logger *slog.Logger
}

func (h handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, h.logger, err)
}

func caller(r *http.Request) peer.Principal {
	p, _ := peer.FromContext(r.Context())
	return p
}

// maxBody bounds every request of this API but the manifest's.
const maxBody = 16 << 10

// decode reads one JSON value strictly (httpx.UnmarshalJSON: unknown
// fields, duplicate and case-variant keys refused; bounded size and
// nesting).
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, limit)
		}
		return fmt.Errorf("%w: cannot read the body", fault.Invalid)
	}
	return decodeJSON(b, v)
}

func decodeJSON(b []byte, v any) error { return httpx.UnmarshalJSON(b, 8, v) }

// ParseElevationRequest decodes and checks the body of POST
// /v1/elevations: what a (possibly manipulated) agent sends.
func ParseElevationRequest(b []byte) (api.ElevationRequest, error) {
	var req api.ElevationRequest
	if len(b) > maxBody {
		return req, fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, maxBody)
	}
	if err := decodeJSON(b, &req); err != nil {
		return req, err
	}
	if err := ValidateTaskID(req.Task); err != nil {
		return req, err
	}
	if err := ValidateName("trigger", req.Trigger); err != nil {
		return req, err
	}
	if req.Justification == "" || len(req.Justification) > maxJustification {
		return req, fmt.Errorf("%w: a justification of 1 to %d bytes is required", fault.Invalid, maxJustification)
	}
	return req, nil
}

func (h handlers) applyManifest(w http.ResponseWriter, r *http.Request) {
	var req api.ManifestApplyRequest
	if err := decode(w, r, 2*MaxManifestBytes, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	m, err := h.s.ApplyManifest(r.Context(), caller(r), []byte(req.Source))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, ManifestJSON(m, true))
}

func (h handlers) listManifests(w http.ResponseWriter, r *http.Request) {
	ms, err := h.s.Manifests(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]api.Manifest, 0, len(ms))
	for _, m := range ms {
		out = append(out, ManifestJSON(m, false))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) getManifest(w http.ResponseWriter, r *http.Request) {
	m, err := h.s.Manifest(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ManifestJSON(m, true))
}

func (h handlers) startTask(w http.ResponseWriter, r *http.Request) {
	var req api.TaskStartRequest
	if err := decode(w, r, maxBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	t, err := h.s.StartTask(r.Context(), caller(r), req.Manifest, req.Description)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, TaskJSON(t, h.s.clock.Now()))
}

func (h handlers) listTasks(w http.ResponseWriter, r *http.Request) {
	ts, err := h.s.Tasks(r.Context(), r.URL.Query().Get("open") == "true")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	now := h.s.clock.Now()
	out := make([]api.Task, 0, len(ts))
	for _, t := range ts {
		out = append(out, TaskJSON(t, now))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) getTask(w http.ResponseWriter, r *http.Request) {
	t, err := h.s.Task(r.Context(), caller(r), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, TaskJSON(t, h.s.clock.Now()))
}

func (h handlers) endTask(to TaskStatus) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.TaskEndRequest
		if err := decode(w, r, maxBody, &req); err != nil {
			h.fail(w, r, err)
			return
		}
		t, err := h.s.endTask(r.Context(), caller(r), r.PathValue("id"), to, req.Reason)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, TaskJSON(t, h.s.clock.Now()))
	}
}

func (h handlers) taskState(w http.ResponseWriter, r *http.Request) {
	st, err := h.s.State(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, StateJSON(st))
}

func (h handlers) taskOutput(w http.ResponseWriter, r *http.Request) {
	var req api.TaskOutputRequest
	if err := decode(w, r, maxBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	var res cedar.EntityUID
	if err := res.UnmarshalCedar([]byte(req.Resource)); err != nil {
		h.fail(w, r, fmt.Errorf("%w: resource %q is not a Cedar entity", fault.Invalid, req.Resource))
		return
	}
	untrusted, tainted, err := h.s.TaintByOutput(r.Context(), caller(r), r.PathValue("id"), req.Agent, res, truncateReason(req.Suspect))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, api.TaskOutputResult{Untrusted: untrusted, Tainted: tainted})
}

func (h handlers) request(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody+1))
	if err != nil && !errors.As(err, new(*http.MaxBytesError)) {
		h.fail(w, r, fmt.Errorf("%w: cannot read the body", fault.Invalid))
		return
	}
	req, err := ParseElevationRequest(b)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	e, err := h.s.Request(r.Context(), caller(r), req.Task, req.Trigger, req.Justification)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, ElevationJSON(e, h.s.clock.Now()))
}

func (h handlers) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Task: q.Get("task")}
	if st := q.Get("status"); st != "" {
		for _, s := range strings.Split(st, ",") {
			f.Statuses = append(f.Statuses, Status(s))
		}
	}
	active := q.Get("active") == "true"
	if active {
		f.Statuses = []Status{StatusActive}
	}
	es, err := h.s.Elevations(r.Context(), f, active)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	now := h.s.clock.Now()
	out := make([]api.Elevation, 0, len(es))
	for _, e := range es {
		out = append(out, ElevationJSON(e, now))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// get shows an elevation with its provenance: the task as it is now
// (tainted?) and what the trigger grants.
func (h handlers) get(w http.ResponseWriter, r *http.Request) {
	p := caller(r)
	e, err := h.s.Elevation(r.Context(), p, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	now := h.s.clock.Now()
	out := ElevationJSON(e, now)
	if t, err := h.s.store.GetTask(r.Context(), e.Task); err == nil {
		tj := TaskJSON(t, now)
		out.TaskNow = &tj
	}
	if m, err := h.s.store.GetManifest(r.Context(), e.Manifest); err == nil {
		if tr, ok := m.Trigger(e.Trigger); ok {
			tj := triggerJSON(tr)
			out.Grants = &tj
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) decision(w http.ResponseWriter, r *http.Request, fn func(Binding, string) (Elevation, error)) {
	var req api.ElevationDecision
	if err := decode(w, r, maxBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	e, err := fn(Binding{Elevation: req.Elevation, Task: req.Task}, req.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ElevationJSON(e, h.s.clock.Now()))
}

func (h handlers) approve(w http.ResponseWriter, r *http.Request) {
	h.decision(w, r, func(b Binding, reason string) (Elevation, error) {
		return h.s.Approve(r.Context(), caller(r), r.PathValue("id"), b, reason)
	})
}

func (h handlers) deny(w http.ResponseWriter, r *http.Request) {
	h.decision(w, r, func(b Binding, reason string) (Elevation, error) {
		return h.s.Deny(r.Context(), caller(r), r.PathValue("id"), b, reason)
	})
}

func (h handlers) revoke(w http.ResponseWriter, r *http.Request) {
	var req api.RevokeRequest
	if err := decode(w, r, maxBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	e, err := h.s.Revoke(r.Context(), caller(r), r.PathValue("id"), req.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ElevationJSON(e, h.s.clock.Now()))
}

func (h handlers) use(w http.ResponseWriter, r *http.Request) {
	var req api.ElevationUse
	if err := decode(w, r, maxBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	e, err := h.s.UseGrant(r.Context(), caller(r), r.PathValue("id"), Use{Task: req.Task, Agent: req.Agent, Resource: req.Resource, DecisionID: req.DecisionID})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ElevationJSON(e, h.s.clock.Now()))
}

func (h handlers) standing(w http.ResponseWriter, r *http.Request) {
	st, err := h.s.Standing(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, api.Standing{Standing: st.Standing, Active: st.Active, Pending: st.Pending, OpenTasks: st.OpenTasks})
}

// metrics serves the standing privilege figures in the Prometheus text
// exposition format.
func (h handlers) metrics(w http.ResponseWriter, r *http.Request) {
	st, err := h.s.Standing(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	for _, m := range []struct {
		name, help string
		v          int64
	}{
		{"bulkhead_standing_grants", "Grants in force outside an open task (zero by construction).", st.Standing},
		{"bulkhead_active_grants", "Grants in force, all inside open tasks.", st.Active},
		{"bulkhead_pending_elevations", "Elevation requests awaiting approval.", st.Pending},
		{"bulkhead_open_tasks", "Tasks open now.", st.OpenTasks},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", m.name, m.help, m.name, m.name, m.v)
	}
}

func (h handlers) getApprovalPolicy(w http.ResponseWriter, r *http.Request) {
	p, err := h.s.ApprovalPolicy(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, approvalPolicyJSON(p, true))
}

func (h handlers) putApprovalPolicy(w http.ResponseWriter, r *http.Request) {
	var req api.ApprovalPolicyApplyRequest
	if err := decode(w, r, 2<<20, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	files := make([]PolicyFile, len(req.Files))
	for i, f := range req.Files {
		files[i] = PolicyFile{Name: f.Name, Content: f.Content}
	}
	p, err := h.s.ApplyApprovalPolicy(r.Context(), caller(r), files)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, approvalPolicyJSON(p, false))
}

func approvalPolicyJSON(p ApprovalPolicySet, schema bool) api.ApprovalPolicy {
	out := api.ApprovalPolicy{Version: p.Version, Digest: p.Digest, CreatedAt: p.CreatedAt, CreatedBy: p.CreatedBy}
	for _, f := range p.Files {
		out.Files = append(out.Files, api.PolicyFile{Name: f.Name, Content: f.Content})
	}
	if schema {
		out.Schema = ApprovalSchema()
	}
	return out
}

// ManifestJSON converts a stored manifest; full adds its source and
// compiled policies.
func ManifestJSON(m StoredManifest, full bool) api.Manifest {
	out := api.Manifest{Name: m.Name, Version: m.Version, Description: m.Description, Digest: m.Digest, Agents: m.Agents,
		MaxDuration: time.Duration(m.MaxDuration).String(), Approved: rulesJSON(m.ApprovedActions), Prohibited: rulesJSON(m.ProhibitedActions),
		Triggers: []api.ManifestTrigger{}, Limits: api.TaskLimits(m.ScopeLimits), CreatedAt: m.CreatedAt, CreatedBy: m.CreatedBy}
	for _, t := range m.EscalationTriggers {
		out.Triggers = append(out.Triggers, triggerJSON(t))
	}
	if full {
		out.Source, out.Policies = m.Source, m.Policies
	}
	return out
}

func rulesJSON(rs []Rule) []api.ManifestRule {
	out := make([]api.ManifestRule, 0, len(rs))
	for _, r := range rs {
		out = append(out, api.ManifestRule{Actions: r.Actions, Resources: r.Resources, When: r.When})
	}
	return out
}

func triggerJSON(t Trigger) api.ManifestTrigger {
	return api.ManifestTrigger{Name: t.Name, Description: t.Description, Grants: rulesJSON(t.Grants),
		MaxDuration: time.Duration(t.MaxDuration).String(), MaxUses: t.MaxUses, Approval: t.Approval, Sensitivity: t.Sensitivity}
}

// TaskJSON converts a task as of now.
func TaskJSON(t Task, now time.Time) api.Task {
	return api.Task{ID: t.ID, Agent: t.Agent, Manifest: t.Manifest, ManifestVersion: t.ManifestVersion, Description: t.Description,
		Status: taskState(t, now), Open: t.OpenAt(now), Tainted: t.Tainted, TaintedAt: t.TaintedAt, TaintSource: t.TaintSource,
		OpenedAt: t.OpenedAt, Deadline: t.Deadline, EndedAt: t.EndedAt, EndedBy: t.EndedBy, EndReason: t.EndReason}
}

// ElevationJSON converts an elevation as of now.
func ElevationJSON(e Elevation, now time.Time) api.Elevation {
	out := api.Elevation{ID: e.ID, Task: e.Task, Agent: e.Agent, Manifest: e.Manifest, Trigger: e.Trigger, Justification: e.Justification,
		Approval: e.Approval, Sensitivity: e.Sensitivity, Tainted: e.Tainted, Status: string(e.Status), RequestedAt: e.RequestedAt,
		RequestExpiresAt: e.RequestExpiresAt, GrantedAt: e.GrantedAt, ExpiresAt: e.ExpiresAt, MaxUses: e.MaxUses, Uses: e.Uses,
		EndedAt: e.EndedAt, EndedBy: e.EndedBy, EndReason: e.EndReason, InForce: e.InForce(now), Approvals: []api.ElevationApproval{}}
	for _, a := range e.Approvals {
		out.Approvals = append(out.Approvals, api.ElevationApproval{Approver: a.Approver, Reason: a.Reason, At: a.At})
	}
	return out
}

// StateJSON converts a task's state for a gateway.
func StateJSON(st TaskState) api.TaskState {
	out := api.TaskState{Task: TaskJSON(st.Task, st.Checked), Open: st.Open, Limits: api.TaskLimits(st.Limits),
		Grants: []api.GrantState{}, Checked: st.Checked}
	for _, g := range st.Grants {
		out.Grants = append(out.Grants, api.GrantState{Elevation: g.ID, Name: GrantName(g.Manifest, g.Trigger),
			ExpiresAt: g.ExpiresAt, MaxUses: g.MaxUses, Uses: g.Uses})
	}
	return out
}

// truncateReason bounds a reason a gateway gives.
func truncateReason(s string) string {
	if len(s) > 512 {
		return s[:512]
	}
	return s
}
