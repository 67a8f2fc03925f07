package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Agents is what the console needs of the identity service.
type Agents interface {
	ListAgents(ctx context.Context) ([]identity.Agent, error)
	GetAgent(ctx context.Context, name string) (identity.Agent, error)
	AgentCerts(ctx context.Context, name string) ([]identity.Cert, error)
	Revoke(ctx context.Context, by audit.Actor, name, reason string) ([]string, error)
	SetEnabled(ctx context.Context, by audit.Actor, name string, enabled bool) (identity.Agent, error)
}

// Policies is what the console needs of the policy service.
type Policies interface {
	Versions(ctx context.Context) ([]policy.Version, policy.State, error)
	Version(ctx context.Context, n int64) (policy.Version, policy.State, error)
	ShadowReport(ctx context.Context, version int64, limit int) (policy.ShadowSummary, []policy.ShadowDiff, error)
	Roles(ctx context.Context, agent string) ([]policy.RoleAssignment, error)
}

// Evidence is the audit log as the console shows it.
type Evidence struct {
	// Events reads stored events (search).
	Events audit.Reader
	// Stream serves the live event stream (audit.StreamHandler).
	Stream http.Handler
	// Verify checks the whole log against its signed checkpoints.
	Verify func(ctx context.Context) (audit.Report, error)
}

// view serves a signed-in page: without a session, the browser is sent
// to sign in.
func (c *Console) view(render func(w http.ResponseWriter, r *http.Request, p page)) http.Handler {
	return c.secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.current(r)
		if !ok {
			http.Redirect(w, r, "/console/login", http.StatusSeeOther)
			return
		}
		render(w, r, page{Operator: s.Operator, CSRF: s.CSRF, Expires: s.Expires.UTC().Format(time.RFC3339)})
	}))
}

// decisionsPage shows decisions as they are made (the page's script
// follows /console/api/events).
func (c *Console) decisionsPage(w http.ResponseWriter, r *http.Request, p page) {
	p.Title = "Live decisions"
	c.render(w, "decisions.html", p)
}

// events is the audit stream for a signed-in browser: the same stream as
// /v1/events, authenticated by the session instead of a certificate.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	s, ok := c.current(r)
	if !ok {
		c.refuse(r.Context(), r, audit.Actor{Kind: audit.ActorAnonymous}, "no session")
		httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "sign in with a passkey"})
		return
	}
	// The stream ends with the session: it does not outlive it.
	ctx, cancel := clock.Until(r.Context(), c.cfg.Clock, s.Expires)
	defer cancel()
	c.cfg.Evidence.Stream.ServeHTTP(w, r.WithContext(ctx))
}

type auditView struct {
	page
	Query   auditQuery
	Events  []audit.Event
	Error   string
	Limited bool
}

type auditQuery struct {
	Agent, Decision, Action, DecisionID string
}

// searchLimit bounds a search's page.
const searchLimit = 200

// auditPage searches the audit log by agent, decision, action and
// decision id, newest first.
func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, p page) {
	p.Title = "Audit"
	v := auditView{page: p}
	qs := r.URL.Query()
	v.Query = auditQuery{Agent: qs.Get("agent"), Decision: qs.Get("decision"), Action: qs.Get("action"), DecisionID: qs.Get("decision_id")}
	q := audit.Query{AfterSeq: -1, Limit: searchLimit, Newest: true, DecisionID: v.Query.DecisionID, Decision: audit.Decision(v.Query.Decision)}
	if v.Query.Action != "" {
		q.Actions = []string{v.Query.Action}
	}
	if a := v.Query.Agent; a != "" {
		if !strings.HasPrefix(a, "spiffe://") {
			// A bare name is an agent of the operator's trust domain.
			if op, err := spiffeid.FromString(p.Operator); err == nil {
				if id, err := spiffeid.FromSegments(op.TrustDomain(), "agent", a); err == nil {
					a = id.String()
				}
			}
		}
		q.Subject = a
	}
	rows, err := c.cfg.Evidence.Events.Events(r.Context(), q)
	if err != nil {
		v.Error = "the audit log could not be read"
		c.cfg.Logger.Error("console audit search", "err", err)
	}
	for i := len(rows) - 1; i >= 0; i-- {
		ev, err := audit.EventFromRow(rows[i])
		if err != nil {
			v.Error = err.Error()
			break
		}
		v.Events = append(v.Events, ev)
	}
	v.Limited = len(rows) == searchLimit
	c.render(w, "audit.html", v)
}

// verify checks the audit log against its signed checkpoints and says
// what it found.
func (c *Console) verify(w http.ResponseWriter, r *http.Request, s session) {
	rep, err := c.cfg.Evidence.Verify(r.Context())
	var ve *audit.VerifyError
	switch {
	case errors.As(err, &ve), errors.Is(err, audit.ErrTampered), errors.Is(err, audit.ErrNoCheckpoint):
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"ok": false, "error": err.Error()})
	case err != nil:
		httpx.WriteError(w, r, c.cfg.Logger, err)
	default:
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "report": rep,
			"summary": fmt.Sprintf("%d entries verify against the signed checkpoint of size %d (%d checkpoints checked, %d entries after it checked by hash)",
				rep.Size, rep.Latest.Size, rep.Checkpoints, rep.Unsigned)})
	}
}

type agentsView struct {
	page
	Agents []identity.Agent
}

func (c *Console) agentsPage(w http.ResponseWriter, r *http.Request, p page) {
	p.Title = "Agents"
	agents, err := c.cfg.Agents.ListAgents(r.Context())
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	c.render(w, "agents.html", agentsView{page: p, Agents: agents})
}

type agentView struct {
	page
	Agent identity.Agent
	Certs []identity.Cert
	Roles []policy.RoleAssignment
	Tasks []elevation.Task
}

// agentPage shows one agent: its certificates, roles and open tasks.
func (c *Console) agentPage(w http.ResponseWriter, r *http.Request, p page) {
	ctx, name := r.Context(), r.PathValue("name")
	a, err := c.cfg.Agents.GetAgent(ctx, name)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	p.Title = "Agent " + a.Name
	v := agentView{page: p, Agent: a}
	if v.Certs, err = c.cfg.Agents.AgentCerts(ctx, name); err == nil {
		v.Roles, err = c.cfg.Policies.Roles(ctx, name)
	}
	var tasks []elevation.Task
	if err == nil {
		tasks, err = c.cfg.Elevations.Tasks(ctx, true)
	}
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	for _, t := range tasks {
		if t.Agent == a.SPIFFEID {
			v.Tasks = append(v.Tasks, t)
		}
	}
	c.render(w, "agent.html", v)
}

type agentAction struct {
	Action string `json:"action"` // revoke, disable or enable
	Reason string `json:"reason"`
}

// agentChange revokes, disables or enables an agent as the signed-in
// human; the identity service records it.
func (c *Console) agentChange(w http.ResponseWriter, r *http.Request, s session) {
	var req agentAction
	if err := httpx.DecodeJSON(w, r, 4<<10, &req); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	name := r.PathValue("name")
	var err error
	switch req.Action {
	case "revoke":
		reason := req.Reason
		if reason == "" {
			reason = "revoked in the console"
		}
		_, err = c.cfg.Agents.Revoke(r.Context(), s.actor(), name, reason)
	case "disable", "enable":
		_, err = c.cfg.Agents.SetEnabled(r.Context(), s.actor(), name, req.Action == "enable")
	default:
		err = fmt.Errorf("%w: action must be revoke, disable or enable", fault.Invalid)
	}
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"agent": name, "done": req.Action})
}

type policiesView struct {
	page
	Versions []policy.Version
	State    policy.State
	// From and To are the versions compared (?from=&to=; by default the
	// live version and the one before it), Diff their differences.
	From, To int64
	Diff     []FileDiff
	// Shadow is the shadow candidate's report, if one is evaluated.
	Shadow      *policy.ShadowSummary
	ShadowDiffs []policy.ShadowDiff
}

// shadowShown bounds the shadow differences listed.
const shadowShown = 50

func (c *Console) policiesPage(w http.ResponseWriter, r *http.Request, p page) {
	p.Title = "Policies"
	ctx := r.Context()
	versions, state, err := c.cfg.Policies.Versions(ctx)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	v := policiesView{page: p, Versions: versions, State: state, To: state.Live, From: state.Live - 1}
	if n, err := strconv.ParseInt(r.URL.Query().Get("to"), 10, 64); err == nil {
		v.To = n
	}
	if n, err := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64); err == nil {
		v.From = n
	}
	if v.From > 0 && v.To > 0 {
		from, _, err := c.cfg.Policies.Version(ctx, v.From)
		if err == nil {
			var to policy.Version
			if to, _, err = c.cfg.Policies.Version(ctx, v.To); err == nil {
				v.Diff = diffVersions(from.Files, to.Files)
			}
		}
		if err != nil && !errors.Is(err, fault.NotFound) {
			httpx.WriteError(w, r, c.cfg.Logger, err)
			return
		}
	}
	if state.Shadow != 0 {
		sum, diffs, err := c.cfg.Policies.ShadowReport(ctx, state.Shadow, shadowShown)
		if err != nil {
			httpx.WriteError(w, r, c.cfg.Logger, err)
			return
		}
		v.Shadow, v.ShadowDiffs = &sum, diffs
	}
	c.render(w, "policies.html", v)
}
