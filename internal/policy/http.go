package policy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// maxApplyBody bounds an apply request: a policy set at its limit, JSON
// escaped.
const maxApplyBody = 2*MaxSetBytes + 1<<20

// Routes registers the policy API on mux. Every route needs an SVID over
// mTLS (guard): the AuthZEN decision endpoints take operators and Bulkhead
// components (a gateway); the rest only operators. Agents may not ask the
// PDP anything: probing policy is itself a step of an attack.
func (s *Service) Routes(mux *http.ServeMux, guard peer.Guard, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	operator := func(f http.HandlerFunc) http.Handler { return guard.Require(peer.Kinds(audit.ActorOperator), f) }
	pep := func(f http.HandlerFunc) http.Handler {
		return guard.Require(peer.Kinds(audit.ActorOperator, audit.ActorWorkload), f)
	}
	mux.Handle("POST /access/v1/evaluation", pep(h.evaluate(false)))
	mux.Handle("POST /access/v1/evaluations", pep(h.evaluate(true)))
	mux.HandleFunc("GET /.well-known/authzen-configuration", h.discovery)
	mux.Handle("POST /v1/policy/versions", operator(h.apply))
	mux.Handle("GET /v1/policy/versions", operator(h.versions))
	mux.Handle("GET /v1/policy/versions/{version}", operator(h.version))
	mux.Handle("POST /v1/policy/rollback", operator(h.rollback))
	mux.Handle("POST /v1/policy/promote", operator(h.state(s.Promote)))
	mux.Handle("POST /v1/policy/shadow/stop", operator(h.state(s.StopShadow)))
	mux.Handle("GET /v1/policy/shadow/report", operator(h.shadowReport))
	mux.Handle("POST /v1/policy/explain", operator(h.explain))
	mux.Handle("GET /v1/roles", operator(h.roles))
	mux.Handle("PUT /v1/agents/{name}/roles/{role}", operator(h.addRole))
	mux.Handle("DELETE /v1/agents/{name}/roles/{role}", operator(h.removeRole))
	mux.Handle("PUT /v1/tools", operator(h.applyCatalog))
	mux.Handle("GET /v1/tools", operator(h.catalog))
}

type handlers struct {
	s      *Service
	logger *slog.Logger
}

func (h handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, h.logger, err)
}

func caller(r *http.Request) audit.Actor {
	p, _ := peer.FromContext(r.Context())
	return p.Actor()
}

func (h handlers) evaluate(batch bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("X-Request-ID"); id != "" && len(id) <= 256 {
			w.Header().Set("X-Request-ID", id)
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxAuthZENBody))
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, MaxAuthZENBody))
			return
		}
		b, err := parseAuthZEN(body)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if !batch && !b.single {
			h.fail(w, r, fmt.Errorf("%w: send a batch of evaluations to /access/v1/evaluations", fault.Invalid))
			return
		}
		out, err := h.s.evaluateAuthZEN(r.Context(), caller(r), b)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if b.single {
			httpx.WriteJSON(w, http.StatusOK, out[0])
			return
		}
		httpx.WriteJSON(w, http.StatusOK, api.AuthZENEvaluations{Evaluations: out})
	}
}

// discovery serves the AuthZEN PDP metadata (public, like the bundle).
func (h handlers) discovery(w http.ResponseWriter, r *http.Request) {
	base := "https://" + r.Host
	httpx.WriteJSON(w, http.StatusOK, map[string]string{
		"policy_decision_point":       base,
		"access_evaluation_endpoint":  base + "/access/v1/evaluation",
		"access_evaluations_endpoint": base + "/access/v1/evaluations",
	})
}

func (h handlers) apply(w http.ResponseWriter, r *http.Request) {
	var req api.PolicyApplyRequest
	if err := httpx.DecodeJSON(w, r, maxApplyBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	files := make([]File, len(req.Files))
	for i, f := range req.Files {
		files[i] = File(f)
	}
	v, err := h.s.Apply(r.Context(), caller(r), files, req.Shadow, req.Description)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	live, shadow := h.s.State()
	httpx.WriteJSON(w, http.StatusCreated, versionJSON(v, State{Live: live, Shadow: shadow}))
}

func versionJSON(v Version, st State) api.PolicyVersion {
	out := api.PolicyVersion{Version: v.Number, Digest: v.Digest, Policies: v.Policies, Shadow: v.Shadow,
		Description: v.Description, CreatedAt: v.CreatedAt.UTC(), CreatedBy: v.CreatedBy,
		Live: v.Number == st.Live, Candidate: v.Number == st.Shadow}
	for _, f := range v.Files {
		out.Files = append(out.Files, api.PolicyFile(f))
	}
	return out
}

func stateJSON(st State) api.PolicyState { return api.PolicyState{Live: st.Live, Shadow: st.Shadow} }

func (h handlers) versions(w http.ResponseWriter, r *http.Request) {
	vs, st, err := h.s.Versions(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := api.PolicyVersions{State: stateJSON(st), Versions: make([]api.PolicyVersion, 0, len(vs))}
	for _, v := range vs {
		out.Versions = append(out.Versions, versionJSON(v, st))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// parseVersion reads "live" (0), "shadow" (-1) or a version number.
func parseVersion(s string) (int64, error) {
	switch s {
	case "", "live":
		return 0, nil
	case "shadow":
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: version %q is not live, shadow or a version number", fault.Invalid, s)
	}
	return n, nil
}

func (h handlers) version(w http.ResponseWriter, r *http.Request) {
	n, err := parseVersion(r.PathValue("version"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	v, st, err := h.s.Version(r.Context(), n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, versionJSON(v, st))
}

func (h handlers) rollback(w http.ResponseWriter, r *http.Request) {
	var req api.PolicyRollbackRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Version < 1 {
		h.fail(w, r, fmt.Errorf("%w: version must be a version number", fault.Invalid))
		return
	}
	st, err := h.s.Rollback(r.Context(), caller(r), req.Version)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, stateJSON(st))
}

func (h handlers) state(fn func(ctx context.Context, by audit.Actor) (State, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st, err := fn(r.Context(), caller(r))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, stateJSON(st))
	}
}

func (h handlers) shadowReport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var version int64
	limit := 100
	if v := q.Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			h.fail(w, r, fmt.Errorf("%w: version must be a version number", fault.Invalid))
			return
		}
		version = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			h.fail(w, r, fmt.Errorf("%w: limit must be a number (0 for all)", fault.Invalid))
			return
		}
		limit = n
	}
	sum, diffs, err := h.s.ShadowReport(r.Context(), version, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := api.ShadowReport{ShadowVersion: sum.Version, Evaluated: sum.Evaluated, Flipped: sum.AllowToDeny + sum.DenyToAllow,
		AllowToDeny: sum.AllowToDeny, DenyToAllow: sum.DenyToAllow, Unrecorded: sum.Unrecorded, Differences: []api.ShadowDifference{}}
	for _, d := range diffs {
		out.Differences = append(out.Differences, api.ShadowDifference{DecisionID: d.DecisionID, Time: d.Time.UTC(),
			LiveVersion: d.LiveVersion, Principal: d.Principal, Action: d.Action, Resource: d.Resource,
			Live: word(d.LiveAllowed), Shadow: word(d.ShadowAllowed), LiveReasons: d.LiveReasons, ShadowReasons: d.ShadowReasons})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func word(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

func (h handlers) explain(w http.ResponseWriter, r *http.Request) {
	var req api.PolicyExplainRequest
	if err := httpx.DecodeJSON(w, r, MaxAuthZENBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	pr, _, err := authzenRequest(api.AuthZENRequest{Subject: &req.Subject, Action: &req.Action, Resource: &req.Resource, Context: req.Context})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	version := req.Version
	if req.Shadow {
		version = -1
	}
	ex, err := h.s.explain(r.Context(), pr, version)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ExplanationJSON(ex))
}

// ExplanationJSON converts an explanation to its wire form.
func ExplanationJSON(ex Explanation) api.PolicyExplanation {
	out := api.PolicyExplanation{DecisionID: ex.ID, Decision: word(ex.Allowed), Version: ex.Version,
		Principal: ex.Principal, Action: ex.Action, Resource: ex.Resource, Context: ex.Context,
		Considered: ex.Considered, Total: ex.Total, Determining: []api.PolicyDetail{}, Errors: []api.PolicyDetail{}}
	detail := func(p PolicyInfo) api.PolicyDetail {
		return api.PolicyDetail{ID: p.ID, Effect: p.Effect, Position: fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column), Text: p.Text, Error: p.Error}
	}
	for _, p := range ex.Determining {
		out.Determining = append(out.Determining, detail(p))
	}
	for _, p := range ex.Failed {
		out.Errors = append(out.Errors, detail(p))
	}
	return out
}

func roleJSON(a RoleAssignment) api.RoleAssignment {
	return api.RoleAssignment{Agent: a.Agent, Role: a.Role, CreatedAt: a.CreatedAt.UTC(), CreatedBy: a.CreatedBy}
}

func (h handlers) roles(w http.ResponseWriter, r *http.Request) {
	list, err := h.s.Roles(r.Context(), r.URL.Query().Get("agent"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]api.RoleAssignment, 0, len(list))
	for _, a := range list {
		out = append(out, roleJSON(a))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) addRole(w http.ResponseWriter, r *http.Request) {
	a, err := h.s.AddRole(r.Context(), caller(r), r.PathValue("name"), r.PathValue("role"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, roleJSON(a))
}

func (h handlers) removeRole(w http.ResponseWriter, r *http.Request) {
	if err := h.s.RemoveRole(r.Context(), caller(r), r.PathValue("name"), r.PathValue("role")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h handlers) applyCatalog(w http.ResponseWriter, r *http.Request) {
	var req api.ToolCatalog
	if err := httpx.DecodeJSON(w, r, MaxCatalogBytes, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	c, err := h.s.ApplyCatalog(r.Context(), caller(r), CatalogFromJSON(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, CatalogJSON(c))
}

func (h handlers) catalog(w http.ResponseWriter, r *http.Request) {
	c, err := h.s.Catalog(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, CatalogJSON(c))
}

// CatalogJSON converts a catalog to its wire form.
func CatalogJSON(c Catalog) api.ToolCatalog {
	out := api.ToolCatalog{Servers: make([]api.ToolServer, 0, len(c.Servers))}
	for _, s := range c.Servers {
		out.Servers = append(out.Servers, api.ToolServer{Name: s.Name, Description: s.Description, Sensitivity: s.Sensitivity,
			UntrustedOutput: s.UntrustedOutput, Groups: s.Groups, Tools: entriesJSON(s.Tools), Routes: entriesJSON(s.Routes), Hosts: entriesJSON(s.Hosts)})
	}
	return out
}

func entriesJSON(es []ToolEntry) []api.ToolEntry {
	var out []api.ToolEntry
	for _, e := range es {
		out = append(out, api.ToolEntry(e))
	}
	return out
}

// CatalogFromJSON converts a catalog from its wire form.
func CatalogFromJSON(c api.ToolCatalog) Catalog {
	out := Catalog{Servers: make([]Server, 0, len(c.Servers))}
	for _, s := range c.Servers {
		srv := Server{Name: s.Name, Description: s.Description, Sensitivity: s.Sensitivity,
			UntrustedOutput: s.UntrustedOutput, Groups: s.Groups}
		for _, e := range s.Tools {
			srv.Tools = append(srv.Tools, ToolEntry(e))
		}
		for _, e := range s.Routes {
			srv.Routes = append(srv.Routes, ToolEntry(e))
		}
		for _, e := range s.Hosts {
			srv.Hosts = append(srv.Hosts, ToolEntry(e))
		}
		out.Servers = append(out.Servers, srv)
	}
	return out
}
