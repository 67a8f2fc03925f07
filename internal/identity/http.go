package identity

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// maxCSRBody bounds enrollment and renewal bodies: a CSR plus a token.
const maxCSRBody = 32 << 10

// Routes registers the identity API on mux.
//
// Public, like a SPIFFE bundle endpoint: GET /v1/bundle, GET /v1/crl, and
// POST /v1/enroll (authenticated by its join token). Everything else needs an
// SVID over mTLS: renewal by its holder, the rest by an operator.
func (s *Service) Routes(mux *http.ServeMux, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	guard := s.Guard(logger)
	operator := func(f http.HandlerFunc) http.Handler {
		return guard.Require(peer.Kinds(audit.ActorOperator), f)
	}
	mux.HandleFunc("GET /v1/bundle", h.bundle)
	mux.HandleFunc("GET /v1/crl", h.crl)
	mux.HandleFunc("POST /v1/enroll", h.enroll)
	mux.HandleFunc("POST /v1/enroll/tpm/challenge", h.tpmBegin)
	mux.HandleFunc("POST /v1/enroll/tpm", h.tpmFinish)
	mux.Handle("POST /v1/svid/renew", guard.Require(peer.Kinds(audit.ActorAgent, audit.ActorOperator, audit.ActorWorkload), http.HandlerFunc(h.renew)))
	agent := func(f http.HandlerFunc) http.Handler { return guard.Require(peer.Kinds(audit.ActorAgent), f) }
	mux.Handle("POST /v1/svid/renew/tpm/challenge", agent(h.tpmBegin))
	mux.Handle("POST /v1/svid/renew/tpm", agent(h.tpmFinish))
	mux.Handle("PUT /v1/agents/{name}/tpm", operator(h.setTPM))
	mux.Handle("POST /v1/agents", operator(h.createAgent))
	mux.Handle("GET /v1/agents", operator(h.listAgents))
	mux.Handle("GET /v1/agents/{name}", operator(h.getAgent))
	mux.Handle("POST /v1/agents/{name}/join-token", operator(h.joinToken))
	mux.Handle("POST /v1/agents/{name}/revoke", operator(h.revoke))
	mux.Handle("PUT /v1/agents/{name}/scopes", operator(h.setScopes))
	mux.Handle("POST /v1/agents/{name}/disable", operator(h.setEnabled(false)))
	mux.Handle("POST /v1/agents/{name}/enable", operator(h.setEnabled(true)))
}

// Guard returns the endpoint guard that authenticates callers against this
// service and records refusals in its audit log; other APIs of the control
// plane use it too.
func (s *Service) Guard(logger *slog.Logger) peer.Guard {
	return peer.Guard{Auth: s, Audit: s.audit, Logger: logger}
}

type handlers struct {
	s      *Service
	logger *slog.Logger
}

func (h handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, h.logger, err)
}

func (h handlers) bundle(w http.ResponseWriter, r *http.Request) {
	b, err := h.s.ca.SPIFFEBundle()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (h handlers) crl(w http.ResponseWriter, r *http.Request) {
	der, err := h.s.CRL(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

func (h handlers) enroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if err := httpx.DecodeJSON(w, r, maxCSRBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	issued, err := h.s.Enroll(r.Context(), req.Token, []byte(req.CSR))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, h.svid(issued))
}

func (h handlers) renew(w http.ResponseWriter, r *http.Request) {
	var req api.RenewRequest
	if err := httpx.DecodeJSON(w, r, maxCSRBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	p, _ := peer.FromContext(r.Context())
	issued, err := h.s.Renew(r.Context(), p, []byte(req.CSR))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, h.svid(issued))
}

// tpmCaller is a join token's holder on the enrollment routes and the
// authenticated agent on the renewal routes.
func tpmCaller(r *http.Request, token string) TPMCaller {
	if p, ok := peer.FromContext(r.Context()); ok {
		return TPMCaller{Peer: &p}
	}
	return TPMCaller{Token: token}
}

func (h handlers) tpmBegin(w http.ResponseWriter, r *http.Request) {
	var req api.TPMBeginRequest
	if err := httpx.DecodeJSON(w, r, maxCSRBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ch, err := h.s.BeginTPM(r.Context(), tpmCaller(r, req.Token), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ch)
}

func (h handlers) tpmFinish(w http.ResponseWriter, r *http.Request) {
	var req api.TPMFinishRequest
	if err := httpx.DecodeJSON(w, r, maxCSRBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	issued, err := h.s.FinishTPM(r.Context(), tpmCaller(r, req.Token), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, h.svid(issued))
}

func (h handlers) setTPM(w http.ResponseWriter, r *http.Request) {
	var req api.SetTPMRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	a, err := h.s.SetAgentTPM(r.Context(), caller(r), r.PathValue("name"), req.EK)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, AgentJSON(a, nil))
}

func (h handlers) svid(i Issued) api.SVID {
	return api.SVID{
		SPIFFEID: i.Leaf.URIs[0].String(), Serial: ca.SerialHex(i.Leaf),
		CertChain: string(i.ChainPEM()), Bundle: string(h.s.BundlePEM()), ExpiresAt: i.Leaf.NotAfter.UTC(),
	}
}

func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fault.Invalid
	}
	return d, nil
}

func caller(r *http.Request) audit.Actor {
	p, _ := peer.FromContext(r.Context())
	return p.Actor()
}

func (h handlers) createAgent(w http.ResponseWriter, r *http.Request) {
	var req api.CreateAgentRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ttl, err := parseTTL(req.SVIDTTL)
	if err != nil {
		h.fail(w, r, faultf("svid_ttl %q is not a positive duration", req.SVIDTTL))
		return
	}
	a, err := h.s.CreateAgent(r.Context(), caller(r), req.Name, ttl, req.Scopes)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, AgentJSON(a, nil))
}

func (h handlers) listAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := h.s.ListAgents(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]api.Agent, 0, len(agents))
	for _, a := range agents {
		out = append(out, AgentJSON(a, nil))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) getAgent(w http.ResponseWriter, r *http.Request) {
	a, err := h.s.GetAgent(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	certs, err := h.s.AgentCerts(r.Context(), a.Name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, AgentJSON(a, certs))
}

func (h handlers) joinToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	h.newJoinToken(w, r, api.JoinToken{Agent: name}, func(ttl time.Duration) (string, time.Time, error) {
		return h.s.CreateJoinToken(r.Context(), caller(r), name, ttl)
	})
}

func (h handlers) componentJoinToken(w http.ResponseWriter, r *http.Request) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	id, err := h.s.ComponentID(kind, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.newJoinToken(w, r, api.JoinToken{SPIFFEID: id.String()}, func(ttl time.Duration) (string, time.Time, error) {
		return h.s.CreateComponentJoinToken(r.Context(), caller(r), kind, name, ttl)
	})
}

// newJoinToken reads a join token request, has create make the token and
// answers with it in out.
func (h handlers) newJoinToken(w http.ResponseWriter, r *http.Request, out api.JoinToken, create func(time.Duration) (string, time.Time, error)) {
	var req api.JoinTokenRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		h.fail(w, r, faultf("ttl %q is not a positive duration", req.TTL))
		return
	}
	tok, exp, err := create(ttl)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out.Token, out.ExpiresAt = tok, exp.UTC()
	httpx.WriteJSON(w, http.StatusCreated, out)
}

func (h handlers) revoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	h.revokeWith(w, r, name, func(reason string) ([]string, error) { return h.s.Revoke(r.Context(), caller(r), name, reason) })
}

// revokeWith reads a revocation request, has revoke revoke, and answers
// with the serials revoked, naming what in the result.
func (h handlers) revokeWith(w http.ResponseWriter, r *http.Request, what string, revoke func(reason string) ([]string, error)) {
	var req api.RevokeRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	serials, err := revoke(req.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if serials == nil {
		serials = []string{}
	}
	httpx.WriteJSON(w, http.StatusOK, api.RevokeResult{Agent: what, Serials: serials})
}

// issueWith reads an SVID request (a CSR and an optional TTL), has issue
// issue it, and answers with the SVID.
func (h handlers) issueWith(w http.ResponseWriter, r *http.Request, issue func(csr []byte, ttl time.Duration) (Issued, error)) {
	var req api.ComponentSVIDRequest
	if err := httpx.DecodeJSON(w, r, maxCSRBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		h.fail(w, r, faultf("ttl %q is not a positive duration", req.TTL))
		return
	}
	issued, err := issue([]byte(req.CSR), ttl)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, h.svid(issued))
}

func (h handlers) setScopes(w http.ResponseWriter, r *http.Request) {
	var req api.SetScopesRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	a, err := h.s.SetScopes(r.Context(), caller(r), r.PathValue("name"), req.Scopes)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, AgentJSON(a, nil))
}

func (h handlers) setEnabled(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := h.s.SetEnabled(r.Context(), caller(r), r.PathValue("name"), enabled)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, AgentJSON(a, nil))
	}
}

// AgentJSON converts an agent (and optionally its certificates) to its wire
// form.
func AgentJSON(a Agent, certs []Cert) api.Agent {
	out := api.Agent{Name: a.Name, SPIFFEID: a.SPIFFEID, Status: string(a.Status), SVIDTTL: a.SVIDTTL.String(),
		CreatedAt: a.CreatedAt, CreatedBy: a.CreatedBy, UpdatedAt: a.UpdatedAt, Scopes: a.Scopes, Parent: a.Parent, TPM: a.EKPin}
	if out.Scopes == nil {
		out.Scopes = []string{}
	}
	for _, c := range certs {
		out.Certificates = append(out.Certificates, api.Certificate{Serial: c.Serial, SPIFFEID: c.SPIFFEID,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedBy: c.IssuedBy, Revoked: c.Revoked(),
			RevokedAt: c.RevokedAt, RevokedReason: c.RevokedReason})
	}
	return out
}
