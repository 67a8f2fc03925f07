package token

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// maxFormBody bounds token, introspection and revocation requests; the
// largest legitimate one is a token exchange carrying a CSR and a token.
const maxFormBody = 64 << 10

// Endpoint paths, relative to the issuer.
const (
	MetadataPath   = "/.well-known/oauth-authorization-server"
	TokenPath      = "/oauth2/token"
	JWKSPath       = "/oauth2/jwks"
	IntrospectPath = "/oauth2/introspect"
	RevokePath     = "/oauth2/revoke"
)

// Metadata is the RFC 8414 authorization server metadata.
//
// Bulkhead has no authorization endpoint: agents are clients acting for
// themselves (client_credentials, token exchange), so there is nothing to
// redirect a browser to. Hence no authorization_endpoint (RFC 8414 §2:
// required only with a grant type that uses it), and no
// response_types_supported: the response types are those of the
// authorization endpoint, and with none supported the list would be empty,
// which §3.2 forbids ("claims with zero elements MUST be omitted"); RFC
// 8414 erratum 7793 makes the member conditional like
// authorization_endpoint, for exactly this case. Likewise no
// response_modes_supported, code_challenge_methods_supported (PKCE
// protects the authorization code) or
// authorization_response_iss_parameter_supported (RFC 9207 is about the
// authorization response; absent means false). See docs/tokens.md.
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	JWKSURI                                    string   `json:"jwks_uri"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	ScopesSupported                            []string `json:"scopes_supported,omitempty"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	TLSClientCertificateBoundAccessTokens      bool     `json:"tls_client_certificate_bound_access_tokens"`
}

// Metadata returns the server's RFC 8414 metadata. scopes_supported lists
// the scopes registered resources name (cached briefly); it is left out
// when none does, or when the store cannot be read.
func (s *Service) Metadata(ctx context.Context) Metadata {
	iss := s.Issuer()
	algs := make([]string, len(assertionAlgorithms))
	for i, a := range assertionAlgorithms {
		algs[i] = string(a)
	}
	return Metadata{
		Issuer: iss, TokenEndpoint: iss + TokenPath, JWKSURI: iss + JWKSPath,
		IntrospectionEndpoint: iss + IntrospectPath, RevocationEndpoint: iss + RevokePath,
		ScopesSupported:     s.scopesSupported(ctx),
		GrantTypesSupported: []string{GrantClientCredentials, GrantTokenExchange},
		// No client_secret_basic or client_secret_post: there are no
		// client secrets.
		TokenEndpointAuthMethodsSupported:          []string{"tls_client_auth", "private_key_jwt"},
		TokenEndpointAuthSigningAlgValuesSupported: algs,
		IntrospectionEndpointAuthMethodsSupported:  []string{"tls_client_auth"},
		RevocationEndpointAuthMethodsSupported:     []string{"tls_client_auth"},
		TLSClientCertificateBoundAccessTokens:      true,
	}
}

// Routes registers the authorization server's endpoints. guard
// authenticates mTLS callers of introspection, revocation and resource
// management.
func (s *Service) Routes(mux *http.ServeMux, guard peer.Guard, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	mux.HandleFunc("GET "+MetadataPath, func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, s.Metadata(r.Context()))
	})
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=60")
		_ = json.NewEncoder(w).Encode(s.keys.JWKS(s.clock.Now()))
	})
	mux.HandleFunc("POST "+TokenPath, h.token)
	mux.Handle("POST "+IntrospectPath, guard.Require(peer.Kinds(audit.ActorWorkload, audit.ActorOperator), http.HandlerFunc(h.introspect)))
	mux.Handle("POST "+RevokePath, guard.Require(peer.Kinds(audit.ActorAgent, audit.ActorOperator), http.HandlerFunc(h.revoke)))
	operator := func(f http.HandlerFunc) http.Handler { return guard.Require(peer.Kinds(audit.ActorOperator), f) }
	mux.Handle("POST /v1/resources", operator(h.addResource))
	mux.Handle("GET /v1/resources", operator(h.listResources))
	mux.Handle("DELETE /v1/resources", operator(h.removeResource))
}

type handlers struct {
	s      *Service
	logger *slog.Logger
}

// writeOAuthError answers e. A server-side failure is answered with a
// fixed text, so its cause is logged here, with the request.
func (h handlers) writeOAuthError(w http.ResponseWriter, r *http.Request, e *Error) {
	if e.cause != nil {
		h.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status(), "code", e.Code, "err", e.cause)
	}
	if e.Code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bulkhead", error="invalid_client"`)
	}
	httpx.WriteJSON(w, e.Status(), api.OAuthError{Code: e.Code, Description: e.Description})
}

// ParseForm reads an OAuth form body strictly: POST, form-encoded, bounded,
// no parameters in the query string, none repeated (RFC 6749 §3.2).
func ParseForm(w http.ResponseWriter, r *http.Request) (url.Values, *Error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, oauthErr("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	if r.URL.RawQuery != "" {
		return nil, oauthErr("invalid_request", "parameters belong in the body, not the URL")
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, oauthErr("invalid_request", "the body is over %d bytes", maxFormBody)
		}
		return nil, oauthErr("invalid_request", "cannot read the body")
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, oauthErr("invalid_request", "malformed form body: %v", err)
	}
	for k, v := range form {
		if len(v) > 1 {
			return nil, oauthErr("invalid_request", "parameter %q is repeated", k)
		}
	}
	return form, nil
}

// staticSecretError explains why secrets are refused.
func staticSecretError(method string) *Error {
	return oauthErr("invalid_client", "%s is not accepted: Bulkhead issues no client secrets or static keys; "+
		"authenticate with your SVID over mutual TLS (tls_client_auth) or with a JWT signed by its key (private_key_jwt)", method)
}

// authenticate identifies the token endpoint's client.
func (h handlers) authenticate(r *http.Request, form url.Values) (Client, *Error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		if strings.HasPrefix(strings.ToLower(auth), "basic ") {
			return Client{}, staticSecretError("client_secret_basic")
		}
		return Client{}, oauthErr("invalid_client", "the Authorization header is not a client authentication method here")
	}
	if form.Has("client_secret") {
		return Client{}, staticSecretError("client_secret_post")
	}
	var (
		cl  Client
		err error
	)
	switch at := form.Get("client_assertion_type"); {
	case at != "" || form.Has("client_assertion"):
		if at != AssertionTypeJWTBearer {
			return Client{}, oauthErr("invalid_client", "client_assertion_type must be %s", AssertionTypeJWTBearer)
		}
		cl, err = h.s.verifyAssertion(r.Context(), form.Get("client_assertion"))
	case r.TLS != nil && len(r.TLS.PeerCertificates) > 0:
		leaf := r.TLS.PeerCertificates[0]
		var p peer.Principal
		if p, err = h.s.ids.Authenticate(r.Context(), leaf); err == nil {
			cl = Client{Principal: p, Cert: leaf, Method: "tls_client_auth"}
		}
	default:
		return Client{}, oauthErr("invalid_client", "no client authentication: present your SVID over mutual TLS (tls_client_auth) or send a client_assertion (private_key_jwt)")
	}
	if err != nil {
		return Client{}, fromFault(err, "invalid_client")
	}
	if id := form.Get("client_id"); id != "" && id != cl.Principal.ID.String() {
		return Client{}, oauthErr("invalid_client", "client_id %q does not match the authenticated SVID %s", id, cl.Principal.ID)
	}
	if cl.Principal.Kind != audit.ActorAgent {
		return Client{}, oauthErr("unauthorized_client", "%s is not an agent; access tokens are for agents", cl.Principal.ID)
	}
	return cl, nil
}

// refusedActor names the caller of a refused token request as precisely
// as is known.
func refusedActor(r *http.Request, cl Client) audit.Actor {
	if !cl.Principal.ID.IsZero() {
		return cl.Principal.Actor()
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0]); err == nil {
			if kind, _, err := peer.Classify(id); err == nil {
				return audit.Actor{Kind: kind, ID: id.String()}
			}
		}
	}
	return audit.Actor{Kind: audit.ActorAnonymous}
}

func (h handlers) token(w http.ResponseWriter, r *http.Request) {
	form, oe := ParseForm(w, r)
	var cl Client
	if oe == nil {
		cl, oe = h.authenticate(r, form)
	}
	var resp api.TokenResponse
	if oe == nil {
		req := Request{GrantType: form.Get("grant_type"), Scope: form.Get("scope"), Resource: form.Get("resource"),
			SubjectToken: form.Get("subject_token"), SubjectTokenType: form.Get("subject_token_type"),
			CSR: form.Get("csr"), SubAgent: form.Get("sub_agent"), Task: form.Get("task"),
			LineageProof: form.Get("lineage_proof"), TTLParam: form.Get("requested_expires_in")}
		for _, unsupported := range []string{"actor_token", "requested_subject", "audience"} {
			if form.Has(unsupported) {
				oe = oauthErr("invalid_request", "%s is not supported: a token exchange always creates a new sub-agent of the caller", unsupported)
			}
		}
		if oe == nil {
			req.RequestedTTL, oe = parseTTL(form.Get("requested_expires_in"))
		}
		if oe == nil {
			var err error
			if resp, err = h.s.Token(r.Context(), cl, req); err != nil {
				oe = fromFault(err, "invalid_request")
			}
		}
	}
	if oe != nil && !oe.Recorded {
		action := ActionTokenIssue
		if form.Get("grant_type") == GrantTokenExchange {
			action = ActionTokenExchange
		}
		h.s.recordAfter(r.Context(), audit.Event{Actor: refusedActor(r, cl), Action: action, Target: form.Get("resource"),
			Decision: audit.Deny, Reasons: []string{oe.Error()}, Detail: map[string]string{"grant": form.Get("grant_type")}})
	}
	if oe != nil {
		h.writeOAuthError(w, r, oe)
		return
	}
	w.Header().Set("Pragma", "no-cache")
	httpx.WriteJSON(w, http.StatusOK, resp)
}

func (h handlers) introspect(w http.ResponseWriter, r *http.Request) {
	form, oe := ParseForm(w, r)
	if oe != nil {
		h.writeOAuthError(w, r, oe)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, h.s.Introspect(r.Context(), form.Get("token")))
}

func (h handlers) revoke(w http.ResponseWriter, r *http.Request) {
	form, oe := ParseForm(w, r)
	if oe != nil {
		h.writeOAuthError(w, r, oe)
		return
	}
	if form.Get("token") == "" {
		h.writeOAuthError(w, r, oauthErr("invalid_request", "token is required"))
		return
	}
	p, _ := peer.FromContext(r.Context())
	if err := h.s.Revoke(r.Context(), p, form.Get("token"), form.Get("reason")); err != nil {
		h.writeOAuthError(w, r, fromFault(err, "invalid_request"))
		return
	}
	w.WriteHeader(http.StatusOK)
}

func resourceJSON(r Resource) api.Resource {
	out := api.Resource{URI: r.URI, Scopes: r.Scopes, CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy}
	if out.Scopes == nil {
		out.Scopes = []string{}
	}
	return out
}

func (h handlers) addResource(w http.ResponseWriter, r *http.Request) {
	var req api.Resource
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		httpx.WriteError(w, r, h.logger, err)
		return
	}
	p, _ := peer.FromContext(r.Context())
	res, err := h.s.AddResource(r.Context(), p.Actor(), req.URI, req.Scopes)
	if err != nil {
		httpx.WriteError(w, r, h.logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, resourceJSON(res))
}

func (h handlers) listResources(w http.ResponseWriter, r *http.Request) {
	list, err := h.s.ListResources(r.Context())
	if err != nil {
		httpx.WriteError(w, r, h.logger, err)
		return
	}
	out := make([]api.Resource, 0, len(list))
	for _, res := range list {
		out = append(out, resourceJSON(res))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) removeResource(w http.ResponseWriter, r *http.Request) {
	p, _ := peer.FromContext(r.Context())
	if err := h.s.RemoveResource(r.Context(), p.Actor(), r.URL.Query().Get("uri")); err != nil {
		httpx.WriteError(w, r, h.logger, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
