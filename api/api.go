// Package api holds the JSON wire types shared by the control plane, the CLI
// and the Go client.
package api

import (
	"encoding/json"
	"time"
)

// Error is the body of every non-2xx response from the control plane and
// the gateway.
type Error struct {
	// Code is a stable machine-readable kind: invalid_request,
	// unauthenticated, forbidden, not_found, method_not_allowed, conflict,
	// too_large, unsupported_media_type, budget, upstream, unavailable,
	// internal.
	Code string `json:"code"`
	// Message explains the failure to a human. It never carries secrets,
	// and for upstream, unavailable and internal it is a fixed text: the
	// cause is in the server's log.
	Message string `json:"error"`
}

// CreateAgentRequest registers an agent.
type CreateAgentRequest struct {
	Name string `json:"name"`
	// SVIDTTL is a Go duration ("1h"); empty means the server's default.
	SVIDTTL string `json:"svid_ttl,omitempty"`
	// Scopes the agent may request in access tokens.
	Scopes []string `json:"scopes,omitempty"`
}

// SetScopesRequest replaces an agent's allowed scopes.
type SetScopesRequest struct {
	Scopes []string `json:"scopes"`
}

// Agent is a registered agent.
type Agent struct {
	Name      string    `json:"name"`
	SPIFFEID  string    `json:"spiffe_id"`
	Status    string    `json:"status"`
	SVIDTTL   string    `json:"svid_ttl"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
	Scopes    []string  `json:"scopes"`
	// Parent is set for a sub-agent created by delegation.
	Parent string `json:"parent,omitempty"`
	// TPM is the pin of the TPM the agent's key must live in, if any.
	TPM string `json:"tpm,omitempty"`
	// Certificates is filled by the show call.
	Certificates []Certificate `json:"certificates,omitempty"`
}

// Certificate describes an issued certificate.
type Certificate struct {
	Serial        string    `json:"serial"`
	SPIFFEID      string    `json:"spiffe_id"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	IssuedBy      string    `json:"issued_by"`
	Revoked       bool      `json:"revoked"`
	RevokedAt     time.Time `json:"revoked_at,omitzero"`
	RevokedReason string    `json:"revoked_reason,omitempty"`
}

// JoinTokenRequest asks for a one-time enrollment token.
type JoinTokenRequest struct {
	TTL string `json:"ttl,omitempty"`
}

// JoinToken is a one-time enrollment token. It is shown once.
type JoinToken struct {
	Agent string `json:"agent,omitempty"`
	// SPIFFEID is the identity a component's token enrolls.
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// EnrollRequest trades a join token and a CSR for an X.509-SVID.
type EnrollRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"` // PEM
}

// RenewRequest asks for a new SVID for a new key, over mTLS with the
// current SVID.
type RenewRequest struct {
	CSR string `json:"csr"` // PEM
}

// SVID is an issued X.509-SVID.
type SVID struct {
	SPIFFEID string `json:"spiffe_id"`
	Serial   string `json:"serial"`
	// CertChain is the leaf followed by intermediates, PEM (svid.pem).
	CertChain string `json:"svid"`
	// Bundle is the trust anchors, PEM (svid_bundle.pem).
	Bundle    string    `json:"bundle"`
	ExpiresAt time.Time `json:"expires_at"`
}

// RevokeRequest revokes an agent.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

// RevokeResult lists the certificates a revocation covered.
type RevokeResult struct {
	Agent   string   `json:"agent"`
	Serials []string `json:"serials"`
}

// TokenResponse is the token endpoint's success response (RFC 6749 §5.1,
// RFC 8693 §2.2). A token exchange that creates a sub-agent also returns
// the sub-agent's SVID.
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
	// SPIFFEID, SVID (chain PEM) and Bundle (PEM) describe a sub-agent
	// created by token exchange.
	SPIFFEID string `json:"spiffe_id,omitempty"`
	SVID     string `json:"svid,omitempty"`
	Bundle   string `json:"svid_bundle,omitempty"`
}

// OAuthError is the token endpoint's error response (RFC 6749 §5.2).
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// Resource is a registered OAuth resource (audience).
type Resource struct {
	URI       string    `json:"uri"`
	Scopes    []string  `json:"scopes"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// AuditIngest carries a gateway's records to the control plane's log.
type AuditIngest struct {
	Events []json.RawMessage `json:"events"`
}

// AuditIngestResult gives the sequence numbers the records were committed
// at.
type AuditIngestResult struct {
	Seqs []int64 `json:"seqs"`
}

// PasskeyLink is a one-time link with which an operator registers a
// passkey for the console.
type PasskeyLink struct {
	URL       string    `json:"url"`
	Operator  string    `json:"operator"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Passkey is one of an operator's console passkeys.
type Passkey struct {
	ID         string    `json:"id"` // base64url credential id
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	Revoked    bool      `json:"revoked"`
}
