package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// ActionDecide records a human's approval or denial confirmed with a
// passkey, before the elevation service acts on it.
const ActionDecide = "console.decide"

// Elevations is what the console needs of the elevation service.
type Elevations interface {
	Elevations(ctx context.Context, f elevation.Filter, active bool) ([]elevation.Elevation, error)
	Elevation(ctx context.Context, by peer.Principal, id string) (elevation.Elevation, error)
	Approve(ctx context.Context, by peer.Principal, id string, b elevation.Binding, reason string) (elevation.Elevation, error)
	Deny(ctx context.Context, by peer.Principal, id string, b elevation.Binding, reason string) (elevation.Elevation, error)
	Task(ctx context.Context, by peer.Principal, id string) (elevation.Task, error)
	Tasks(ctx context.Context, openOnly bool) ([]elevation.Task, error)
}

// statement is what a human confirms with a passkey: the request, exactly
// as it stands, what approving it grants, and the decision. Its digest is
// bound into the assertion's challenge, so the assertion confirms this
// decision on this request and no other.
type statement struct {
	Elevation     string    `json:"elevation"`
	Task          string    `json:"task"`
	Agent         string    `json:"agent"`
	Manifest      string    `json:"manifest"`
	Trigger       string    `json:"trigger"`
	Justification string    `json:"justification"`
	Approval      string    `json:"approval"`
	Sensitivity   string    `json:"sensitivity"`
	Tainted       bool      `json:"tainted"`
	TaintSource   string    `json:"taint_source"`
	RequestedAt   time.Time `json:"requested_at"`
	// Adds is what approving lets the agent reach that it cannot reach
	// without this grant (its blast-radius delta).
	Adds     []string `json:"adds"`
	Decision string   `json:"decision"`
	Reason   string   `json:"reason"`
}

// provenance is a request with what a human needs to judge it.
type provenance struct {
	elevation.Elevation
	TaintSource string
	Adds        []string
}

// requestNow reads request id as it stands now, with its provenance: what a
// decision is confirmed against, when asked and when answered.
func (c *Console) requestNow(ctx context.Context, p peer.Principal, id string) (provenance, error) {
	e, err := c.cfg.Elevations.Elevation(ctx, p, id)
	if err != nil {
		return provenance{}, err
	}
	return c.provenanceOf(ctx, p, e, nil)
}

// provenanceOf reads the request's task (who tainted it) and what
// approving would add to the agent's reach. reach memoizes blast radii by
// agent across the requests of one page; nil computes afresh.
func (c *Console) provenanceOf(ctx context.Context, p peer.Principal, e elevation.Elevation, reach map[string]api.BlastRadius) (provenance, error) {
	t, err := c.cfg.Elevations.Task(ctx, p, e.Task)
	if err != nil {
		return provenance{}, err
	}
	adds, err := c.grantDelta(ctx, e, reach)
	if err != nil {
		return provenance{}, err
	}
	return provenance{Elevation: e, TaintSource: t.TaintSource, Adds: adds}, nil
}

// grantDelta is what the agent can reach only through this request's
// grant, from its blast radius.
func (c *Console) grantDelta(ctx context.Context, e elevation.Elevation, reach map[string]api.BlastRadius) ([]string, error) {
	_, name, _ := strings.Cut(e.Agent, "/agent/")
	br, ok := reach[name]
	if !ok {
		var err error
		if br, err = c.cfg.Reports.BlastRadius(ctx, name); err != nil {
			return nil, fmt.Errorf("console: blast radius of %s: %w", name, err)
		}
		if reach != nil {
			reach[name] = br
		}
	}
	var adds []string
	for _, a := range br.Fleet.Agents {
		for _, it := range a.Items {
			this, other := false, false
			for _, w := range it.Ways {
				switch {
				case w.Via == "elevation" && w.Manifest == e.Manifest && w.Trigger == e.Trigger:
					this = true
				case w.Via != "elevation":
					other = true
				}
			}
			if this && !other {
				adds = append(adds, fmt.Sprintf("%s %s (weight %g)", it.Action, it.Resource, it.Weight))
			}
		}
	}
	return adds, nil
}

func statementOf(p provenance, decision, reason string) statement {
	e := p.Elevation
	return statement{Elevation: e.ID, Task: e.Task, Agent: e.Agent, Manifest: e.Manifest, Trigger: e.Trigger, Justification: e.Justification,
		Approval: e.Approval, Sensitivity: e.Sensitivity, Tainted: e.Tainted, TaintSource: p.TaintSource, RequestedAt: e.RequestedAt.UTC(),
		Adds: p.Adds, Decision: decision, Reason: reason}
}

func (s statement) digest() string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// approvalsPage lists the pending requests with what each would grant.
func (c *Console) approvalsPage(w http.ResponseWriter, r *http.Request, p page) {
	p.Title = "Approvals"
	pending, err := c.cfg.Elevations.Elevations(r.Context(), elevation.Filter{Statuses: []elevation.Status{elevation.StatusPending}}, false)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	s, _ := c.current(r)
	who, err := principal(s)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	v := approvalsView{page: p}
	reach := map[string]api.BlastRadius{}
	for _, e := range pending {
		pv, err := c.provenanceOf(r.Context(), who, e, reach)
		if err != nil {
			httpx.WriteError(w, r, c.cfg.Logger, err)
			return
		}
		v.Pending = append(v.Pending, pv)
	}
	c.render(w, "approvals.html", v)
}

type approvalsView struct {
	page
	Pending []provenance
}

type decideRequest struct {
	Decision string `json:"decision"` // approve or deny
	Reason   string `json:"reason"`
}

// decideBegin asks the signed-in human's authenticator to confirm a
// decision: an assertion, user verification required, whose challenge
// binds a fresh nonce and the digest of the statement.
func (c *Console) decideBegin(w http.ResponseWriter, r *http.Request, s session) {
	var req decideRequest
	if err := httpx.DecodeJSON(w, r, 8<<10, &req); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	if req.Decision != "approve" && req.Decision != "deny" {
		httpx.WriteError(w, r, c.cfg.Logger, fmt.Errorf("%w: decision must be approve or deny", fault.Invalid))
		return
	}
	p, err := principal(s)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	pv, err := c.requestNow(r.Context(), p, r.PathValue("id"))
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	st := statementOf(pv, req.Decision, req.Reason)
	h, err := c.human(r.Context(), s.Operator)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	challenge := sha256.Sum256(append(nonce, st.digest()...))
	assertion, sess, err := c.wa.BeginLogin(h, webauthn.WithChallenge(challenge[:]), webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, fmt.Errorf("console: begin confirmation: %w", err))
		return
	}
	if err := c.setCookie(w, ceremonyCookie, ceremony{Kind: "decide", Session: *sess, Operator: s.Operator, Statement: &st, Expires: c.cfg.Clock.Now().Add(ceremonyTTL)}, ceremonyTTL); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"publicKey": assertion.Response, "digest": st.digest()})
}

// decideFinish checks the assertion against the statement it was asked
// for, and the statement against the request as it stands now, and only
// then hands the decision to the elevation service, which applies its
// own rules (never the requester, never an agent, two distinct humans
// where the trigger says so).
func (c *Console) decideFinish(w http.ResponseWriter, r *http.Request, s session) {
	var cer ceremony
	err := c.cookie(r, ceremonyCookie, &cer)
	clearCookie(w, ceremonyCookie)
	id := r.PathValue("id")
	ev := audit.Event{Time: c.cfg.Clock.Now(), Actor: s.actor(), Action: ActionDecide, Target: id,
		Detail: map[string]string{"elevation": id, "passkey": base64.RawURLEncoding.EncodeToString(s.Passkey)}}
	switch {
	case err != nil || cer.Kind != "decide" || cer.Statement == nil:
		c.refuseWith(w, r, ev, fmt.Errorf("%w: no confirmation in progress", fault.Unauthenticated))
		return
	case cer.Operator != s.Operator:
		c.refuseWith(w, r, ev, fmt.Errorf("%w: the confirmation was begun by another operator", fault.Forbidden))
		return
	case cer.Statement.Elevation != id:
		// An assertion for one request replayed onto another.
		ev.Detail["confirmed_elevation"] = cer.Statement.Elevation
		c.refuseWith(w, r, ev, fmt.Errorf("%w: the confirmation is for request %s, not %s", fault.Forbidden, cer.Statement.Elevation, id))
		return
	}
	st := *cer.Statement
	ev.Detail["decision"], ev.Detail["statement"] = st.Decision, "sha256:"+st.digest()
	if err := c.spend(r.Context(), cer); err != nil {
		c.refuseWith(w, r, ev, err)
		return
	}
	h, err := c.human(r.Context(), s.Operator)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxCeremonyBody)
	cred, err := c.wa.FinishLogin(h, cer.Session, r)
	if err != nil {
		c.refuseWith(w, r, ev, fmt.Errorf("%w: %s", fault.Unauthenticated, describe(err)))
		return
	}
	if !cred.Flags.UserVerified {
		c.refuseWith(w, r, ev, fmt.Errorf("%w: the authenticator did not verify the user", fault.Unauthenticated))
		return
	}
	if cred.Authenticator.CloneWarning {
		c.refuseWith(w, r, ev, fmt.Errorf("%w: the passkey's signature counter went back: a cloned authenticator?", fault.Unauthenticated))
		return
	}
	ev.Detail["passkey"] = base64.RawURLEncoding.EncodeToString(cred.ID)
	p, err := principal(s)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	pv, err := c.requestNow(r.Context(), p, id)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	if now := statementOf(pv, st.Decision, st.Reason); now.digest() != st.digest() {
		c.refuseWith(w, r, ev, fmt.Errorf("%w: the request changed after it was confirmed", fault.Conflict))
		return
	}
	b, err := json.Marshal(cred)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	if err := audit.Act(r.Context(), c.cfg.Audit, c.cfg.Logger, ev, func() error {
		return c.cfg.Store.UsePasskey(r.Context(), cred.ID, b, cred.Authenticator.SignCount, c.cfg.Clock.Now())
	}); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	decide := c.cfg.Elevations.Approve
	if st.Decision == "deny" {
		decide = c.cfg.Elevations.Deny
	}
	out, err := decide(r.Context(), p, id, elevation.Binding{Elevation: id, Task: pv.Task}, st.Reason)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"elevation": out.ID, "status": out.Status, "approvals": len(out.Approvals)})
}

// refuseWith records ev as refused for why, and answers the refusal.
func (c *Console) refuseWith(w http.ResponseWriter, r *http.Request, ev audit.Event, why error) {
	audit.Refuse(r.Context(), c.cfg.Audit, c.cfg.Logger, ev, why)
	httpx.WriteError(w, r, c.cfg.Logger, why)
}

// principal is the session's human as the elevation service knows
// operators.
func principal(s session) (peer.Principal, error) {
	id, err := spiffeid.FromString(s.Operator)
	if err != nil {
		return peer.Principal{}, fmt.Errorf("console: session operator: %w", err)
	}
	kind, name, err := peer.Classify(id)
	if err != nil || kind != audit.ActorOperator {
		return peer.Principal{}, errors.New("console: the session's identity is not an operator")
	}
	return peer.Principal{ID: id, Kind: kind, Name: strings.TrimSpace(name)}, nil
}
