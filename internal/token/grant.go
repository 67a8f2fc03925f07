package token

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Error is an OAuth error (RFC 6749 §5.2; invalid_target from RFC 8707).
type Error struct {
	Code        string
	Description string
	// Recorded marks a refusal already in the audit log.
	Recorded bool
	// cause is the server-side failure behind a server_error or
	// temporarily_unavailable: logged by the handler, never sent.
	cause error
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// Unwrap returns the server-side cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// Status is the HTTP status of the error: 401 for client authentication
// failures, 503 when a dependency failed, 500 when the server failed
// otherwise, 400 for the rest.
func (e *Error) Status() int {
	switch e.Code {
	case "invalid_client":
		return http.StatusUnauthorized
	case "temporarily_unavailable":
		return http.StatusServiceUnavailable
	case "server_error":
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

func oauthErr(code, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// fromFault maps a domain error to an OAuth error of the given default code.
func fromFault(err error, code string) *Error {
	oe := mapFault(err, code)
	oe.Recorded = oe.Recorded || identity.IsRecorded(err)
	return oe
}

// mapFault classifies err the way httpx does, so both edges agree: a
// dependency failure is temporarily_unavailable and anything unclassified
// is server_error, both with httpx's fixed text and the cause kept for the
// log; the caller's mistakes keep their message (domain packages keep those
// free of secrets), as invalid_request or as code.
func mapFault(err error, code string) *Error {
	var oe *Error
	if errors.As(err, &oe) {
		return oe
	}
	status, _, text := httpx.Problem(err)
	switch {
	case status == http.StatusServiceUnavailable:
		return &Error{Code: "temporarily_unavailable", Description: text, cause: err}
	case status >= http.StatusInternalServerError:
		return &Error{Code: "server_error", Description: text, cause: err}
	case errors.Is(err, fault.Invalid):
		return oauthErr("invalid_request", "%s", err.Error())
	}
	return oauthErr(code, "%s", err.Error())
}

// Client is an authenticated token endpoint client.
type Client struct {
	Principal peer.Principal
	// Cert is the certificate tokens are bound to: the mTLS certificate, or
	// the one in a private_key_jwt assertion.
	Cert   *x509.Certificate
	Method string
}

// Request is a parsed token request.
type Request struct {
	GrantType        string
	Scope            string
	Resource         string
	SubjectToken     string
	SubjectTokenType string
	CSR              string
	SubAgent         string
	// LineageProof is the parent's signature (base64url) over the
	// sub-agent's enrollment (attestation.LineageStatement), and TTLParam
	// requested_expires_in as sent, which the statement names.
	LineageProof string
	TTLParam     string
	// RequestedTTL is the lifetime asked for (requested_expires_in), or 0.
	RequestedTTL time.Duration
	// Task is the task the token is for (the agent's open task), or "".
	// A sub-agent's token is always its parent's task.
	Task string
}

// Token issues an access token for req to an authenticated client.
func (s *Service) Token(ctx context.Context, cl Client, req Request) (api.TokenResponse, error) {
	switch req.GrantType {
	case GrantClientCredentials:
		return s.clientCredentials(ctx, cl, req)
	case GrantTokenExchange:
		return s.exchange(ctx, cl, req)
	case "":
		return api.TokenResponse{}, oauthErr("invalid_request", "grant_type is required")
	}
	return api.TokenResponse{}, oauthErr("unsupported_grant_type", "grant type %q is not supported (use client_credentials or token exchange)", req.GrantType)
}

// resource returns a registered resource, cached briefly: it changes rarely
// and is read on every token request.
func (s *Service) resource(ctx context.Context, uri string) (Resource, error) {
	if uri == "" {
		return Resource{}, oauthErr("invalid_target", "resource is required: name the API the token is for (RFC 8707)")
	}
	now := s.clock.Now()
	s.resMu.Lock()
	e, ok := s.resources[uri]
	s.resMu.Unlock()
	if ok && now.Sub(e.at) < time.Second && now.Sub(e.at) >= 0 {
		return e.r, nil
	}
	r, err := s.store.GetResource(ctx, uri)
	if errors.Is(err, fault.NotFound) {
		return Resource{}, oauthErr("invalid_target", "resource %q is not registered", uri)
	}
	if err != nil {
		return Resource{}, fmt.Errorf("%w: %w", fault.Unavailable, err)
	}
	s.resMu.Lock()
	if s.resources == nil {
		s.resources = map[string]cachedResource{}
	}
	s.resources[uri] = cachedResource{r: r, at: now}
	s.resMu.Unlock()
	return r, nil
}

// grantScope returns the requested scope if it is within allowed (and the
// resource's scopes, if it lists any), or all of those if none was
// requested. Asking for more is invalid_scope, never a silent cut.
func grantScope(requested string, allowed []string, res Resource) (string, error) {
	ok := func(sc string) bool {
		return slices.Contains(allowed, sc) && (len(res.Scopes) == 0 || slices.Contains(res.Scopes, sc))
	}
	req := strings.Fields(requested)
	if len(req) == 0 {
		var out []string
		for _, sc := range allowed {
			if ok(sc) {
				out = append(out, sc)
			}
		}
		return strings.Join(out, " "), nil
	}
	var bad []string
	for _, sc := range req {
		if !ok(sc) {
			bad = append(bad, sc)
		}
	}
	if len(bad) > 0 {
		return "", oauthErr("invalid_scope", "scope %q is not allowed for this client and resource", strings.Join(bad, " "))
	}
	slices.Sort(req)
	return strings.Join(slices.Compact(req), " "), nil
}

func (s *Service) clientCredentials(ctx context.Context, cl Client, req Request) (api.TokenResponse, error) {
	if req.SubjectToken != "" || req.CSR != "" {
		return api.TokenResponse{}, oauthErr("invalid_request", "subject_token and csr belong to token exchange")
	}
	agent, err := s.ids.ActiveAgent(ctx, cl.Principal.Name)
	if err != nil {
		return api.TokenResponse{}, fromFault(err, "invalid_client")
	}
	// The audience is exactly what was asked for: a registered resource or
	// a path child of one (a gateway's per-server URL; see Covers).
	res, registered, err := s.target(ctx, req.Resource)
	if err != nil {
		return api.TokenResponse{}, fromFault(err, "invalid_target")
	}
	scope, err := grantScope(req.Scope, agent.Scopes, res)
	if err != nil {
		return api.TokenResponse{}, err
	}
	now := s.clock.Now()
	exp := now.Add(s.ttl)
	if req.RequestedTTL > 0 {
		if req.RequestedTTL > MaxTTL {
			return api.TokenResponse{}, oauthErr("invalid_request", "requested lifetime %s is over the maximum of %s", req.RequestedTTL, MaxTTL)
		}
		exp = now.Add(req.RequestedTTL)
	}
	// A token never outlives the certificate it is bound to.
	exp = minTime(exp, cl.Cert.NotAfter)
	c := &Claims{Subject: cl.Principal.ID.String(), Scope: scope, Audience: jwt.Audience{res.URI}}
	if req.Task != "" {
		deadline, err := s.checkTask(ctx, c.Subject, req.Task)
		if err != nil {
			return api.TokenResponse{}, err
		}
		// Nor the task it is for.
		c.Task, exp = req.Task, minTime(exp, deadline)
	}
	// A sub-agent's tokens always carry its ancestry.
	if agent.Parent != "" {
		if c.Act, c.Delegation, err = s.ancestry(ctx, agent); err != nil {
			return api.TokenResponse{}, fromFault(err, "invalid_client")
		}
	}
	detail := map[string]string{"grant": "client_credentials"}
	if registered != res.URI {
		detail["registered_resource"] = registered
	}
	return s.mint(ctx, cl, c, now, exp, audit.Event{Action: ActionTokenIssue, Detail: detail}, "")
}

// checkTask asks whether agent may work in task now and returns the task's
// deadline.
func (s *Service) checkTask(ctx context.Context, agent, task string) (time.Time, error) {
	if s.tasks == nil {
		return time.Time{}, oauthErr("invalid_request", "tasks are not supported by this authorization server")
	}
	deadline, err := s.tasks.TaskFor(ctx, agent, task)
	if err != nil {
		// The task service's messages name the task, and say how and
		// when an ended one ended.
		return time.Time{}, fromFault(err, "invalid_request")
	}
	return deadline, nil
}

// ancestry builds a sub-agent's act chain and delegation token ids from the
// registry.
func (s *Service) ancestry(ctx context.Context, a identity.Agent) (*Actor, []string, error) {
	var (
		act *Actor
		tip **Actor = &act
		dlg []string
	)
	for cur := a; cur.Parent != ""; {
		dlg = append([]string{cur.DelegatedJTI}, dlg...)
		parent, err := s.ids.ActiveAgent(ctx, cur.Parent)
		if err != nil {
			return nil, nil, err
		}
		*tip = &Actor{Subject: parent.SPIFFEID}
		tip = &(*tip).Act
		cur = parent
	}
	return act, dlg, nil
}

// mint signs a token for cl, records it, and only then returns it.
func (s *Service) mint(ctx context.Context, cl Client, c *Claims, now, exp time.Time, ev audit.Event, issuedType string) (api.TokenResponse, error) {
	key, err := s.keys.current(now)
	if err != nil {
		return api.TokenResponse{}, fromFault(err, "server_error")
	}
	jti, err := newJTI()
	if err != nil {
		return api.TokenResponse{}, err
	}
	c.Issuer, c.ClientID, c.ID = s.Issuer(), c.Subject, jti
	c.IssuedAt, c.NotBefore, c.Expiry = jwt.NewNumericDate(now), jwt.NewNumericDate(now), jwt.NewNumericDate(exp)
	c.Cnf = &Confirmation{X5TS256: identity.Thumbprint(cl.Cert)}
	if a := attestation.FromCertificate(cl.Cert); a != (attestation.Claims{}).Normal() {
		c.Attestation = &a
	}
	raw, err := sign(key.signer, c)
	if err != nil {
		return api.TokenResponse{}, err
	}
	ev.Time, ev.Actor, ev.Target, ev.Decision, ev.Task = now, cl.Principal.Actor(), strings.Join(c.Audience, " "), audit.Allow, c.Task
	if ev.Detail == nil {
		ev.Detail = map[string]string{}
	}
	ev.Detail["jti"], ev.Detail["scope"], ev.Detail["exp"] = jti, c.Scope, exp.UTC().Format(time.RFC3339)
	ev.Detail["cnf_x5t_s256"], ev.Detail["auth_method"], ev.Detail["kid"] = c.Cnf.X5TS256, cl.Method, key.KID
	if len(c.Delegation) > 0 {
		ev.Detail["delegation"] = strings.Join(c.Delegation, " ")
	}
	if c.Attestation != nil {
		ev.Detail["attestation"] = c.Attestation.String()
	}
	// The token exists for nobody until its issuance is on record.
	if _, err := s.audit.Record(ctx, ev); err != nil {
		return api.TokenResponse{}, oauthErr("temporarily_unavailable", "token not issued: the audit log is unavailable")
	}
	return api.TokenResponse{AccessToken: raw, TokenType: "Bearer", ExpiresIn: int64(exp.Sub(now).Seconds()),
		Scope: c.Scope, IssuedTokenType: issuedType}, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// exchange delegates to a new sub-agent (RFC 8693).
func (s *Service) exchange(ctx context.Context, cl Client, req Request) (api.TokenResponse, error) {
	switch {
	case req.SubjectToken == "":
		return api.TokenResponse{}, oauthErr("invalid_request", "subject_token is required")
	case req.SubjectTokenType != TypeAccessToken && req.SubjectTokenType != TypeJWT:
		return api.TokenResponse{}, oauthErr("invalid_request", "subject_token_type must be %s", TypeAccessToken)
	case req.CSR == "":
		return api.TokenResponse{}, oauthErr("invalid_request", "csr (the sub-agent's PEM certificate request) is required")
	}
	parent, err := s.Verify(ctx, req.SubjectToken)
	if err != nil {
		// Verify's own refusals describe the caller's token; a store
		// failure behind it must not reach the caller.
		if errors.Is(err, fault.Unavailable) {
			return api.TokenResponse{}, fromFault(err, "invalid_grant")
		}
		return api.TokenResponse{}, oauthErr("invalid_grant", "subject_token: %s", err.Error())
	}
	// Only the holder of the token's key may exchange it, and only for
	// itself: a stolen token, or a sibling's, is useless here.
	if parent.Subject != cl.Principal.ID.String() {
		return api.TokenResponse{}, oauthErr("invalid_grant", "subject_token belongs to %s, not to the authenticated client", parent.Subject)
	}
	if !boundTo(parent, cl.Cert) {
		return api.TokenResponse{}, oauthErr("invalid_grant", "subject_token is bound to another certificate than the one presented")
	}
	// A sub-agent works in its parent's task, or in none if the parent does
	// not: it cannot name another.
	if req.Task != "" && req.Task != parent.Task {
		return api.TokenResponse{}, oauthErr("invalid_request", "a sub-agent's task is its parent's (%q)", parent.Task)
	}
	var taskDeadline time.Time
	if parent.Task != "" {
		if taskDeadline, err = s.checkTask(ctx, parent.Subject, parent.Task); err != nil {
			return api.TokenResponse{}, err
		}
	}
	res := Resource{URI: ""}
	if len(parent.Audience) > 0 {
		res.URI = parent.Audience[0]
	}
	if req.Resource != "" && !slices.Contains(parent.Audience, req.Resource) {
		return api.TokenResponse{}, oauthErr("invalid_target", "a sub-agent's audience must be its parent's (%s)", strings.Join(parent.Audience, " "))
	}
	scope, err := grantScope(req.Scope, parent.Scopes(), res)
	if err != nil {
		return api.TokenResponse{}, oauthErr("invalid_scope", "a sub-agent's scope must be within its parent's current scope %q: %s", parent.Scope, err.(*Error).Description)
	}
	now := s.clock.Now()
	parentExp := parent.Expiry.Time()
	if !taskDeadline.IsZero() {
		parentExp = minTime(parentExp, taskDeadline)
	}
	exp := minTime(now.Add(s.ttl), parentExp)
	if req.RequestedTTL > 0 {
		if now.Add(req.RequestedTTL).After(parentExp) {
			return api.TokenResponse{}, oauthErr("invalid_request", "requested lifetime %s would outlive the parent's token (expires %s)", req.RequestedTTL, parentExp.UTC().Format(time.RFC3339))
		}
		exp = now.Add(req.RequestedTTL)
	}
	lineage, err := childAttestation(cl, req)
	if err != nil {
		return api.TokenResponse{}, err
	}
	child, issued, err := s.ids.CreateSubAgent(ctx, identity.SubAgentRequest{Parent: cl.Principal, ID: req.SubAgent,
		CSR: []byte(req.CSR), Scopes: strings.Fields(scope), NotAfter: exp, JTI: parent.ID, MaxDepth: s.maxDepth, Attestation: lineage})
	if err != nil {
		return api.TokenResponse{}, fromFault(err, "invalid_request")
	}
	exp = minTime(exp, issued.Leaf.NotAfter)
	c := &Claims{Subject: child.SPIFFEID, Scope: scope, Audience: parent.Audience, Task: parent.Task,
		Act: &Actor{Subject: parent.Subject, Act: parent.Act}, Delegation: append(slices.Clone(parent.Delegation), parent.ID)}
	childClient := Client{Principal: peer.Principal{ID: issued.SPIFFEID(), Kind: audit.ActorAgent, Name: child.Name, Cert: issued.Leaf},
		Cert: issued.Leaf, Method: cl.Method}
	resp, err := s.mint(ctx, childClient, c, now, exp, audit.Event{Action: ActionTokenExchange,
		Detail: map[string]string{"parent": parent.Subject, "parent_jti": parent.ID}}, TypeAccessToken)
	if err != nil {
		return api.TokenResponse{}, err
	}
	resp.SPIFFEID, resp.SVID, resp.Bundle = child.SPIFFEID, string(issued.ChainPEM()), string(s.ids.BundlePEM())
	return resp, nil
}

// childAttestation is what a sub-agent's SVID states: a lineage from its
// parent's attested key if the parent signed the enrollment with it, and
// nothing if the parent's key is not attested or it sent no proof. A proof
// that does not verify is a forgery, refused.
func childAttestation(cl Client, req Request) (attestation.Claims, error) {
	if req.LineageProof == "" {
		return attestation.Claims{}, nil
	}
	sig, err := base64.RawURLEncoding.DecodeString(req.LineageProof)
	if err != nil {
		return attestation.Claims{}, oauthErr("invalid_request", "lineage_proof is not base64url")
	}
	// The CSR is checked in full when the sub-agent is created; here only
	// its key is read.
	blk, _ := pem.Decode([]byte(req.CSR))
	if blk == nil {
		return attestation.Claims{}, oauthErr("invalid_request", "csr is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return attestation.Claims{}, oauthErr("invalid_request", "csr: %s", err.Error())
	}
	st := attestation.LineageStatement{ParentSerial: ca.SerialHex(cl.Cert), ChildKey: csr.PublicKey, Scope: req.Scope, TTL: req.TTLParam}
	if err := attestation.VerifyLineage(cl.Cert, st, sig); err != nil {
		return attestation.Claims{}, oauthErr("invalid_grant", "%s", err.Error())
	}
	return attestation.FromCertificate(cl.Cert).Child(), nil
}

// parseTTL reads requested_expires_in (seconds).
func parseTTL(v string) (time.Duration, *Error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > int64(MaxTTL/time.Second) {
		return 0, oauthErr("invalid_request", "requested_expires_in must be a number of seconds in [1, %d]", int64(MaxTTL/time.Second))
	}
	return time.Duration(n) * time.Second, nil
}
