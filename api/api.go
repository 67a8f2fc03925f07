// Package api holds the JSON wire types shared by the control plane, the CLI
// and the Go client.
package api

import "time"

// Error is the body of every non-2xx response from the control plane.
type Error struct {
	// Code is a stable machine-readable kind: invalid_request,
	// unauthenticated, forbidden, not_found, conflict, too_large,
	// unavailable, internal.
	Code string `json:"code"`
	// Message explains the failure to a human. It never carries secrets.
	Message string `json:"error"`
}

// CreateAgentRequest registers an agent.
type CreateAgentRequest struct {
	Name string `json:"name"`
	// SVIDTTL is a Go duration ("1h"); empty means the server's default.
	SVIDTTL string `json:"svid_ttl,omitempty"`
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
	Agent     string    `json:"agent"`
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
