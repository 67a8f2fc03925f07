package identity

import (
	"context"
	"time"
)

// Status is an agent's lifecycle state.
type Status string

// Agent states. Only an active agent can enroll, renew or authenticate.
const (
	StatusActive   Status = "active"
	StatusDisabled Status = "disabled" // reversible: enable restores it
	StatusRevoked  Status = "revoked"  // every certificate revoked; enable allows re-enrollment with a new join token
)

// Agent is a registered agent. A sub-agent (created by delegation) has a
// Name of the form PARENT/sub/ID and names its parent.
type Agent struct {
	Name      string
	SPIFFEID  string
	Status    Status
	SVIDTTL   time.Duration
	CreatedAt time.Time
	CreatedBy string
	UpdatedAt time.Time
	// Scopes are the OAuth scopes the agent may request.
	Scopes []string
	// Parent is the parent agent's name for a sub-agent, else empty.
	Parent string
	// DelegatedJTI is the id of the parent's access token that created a
	// sub-agent; revoking that token revokes the sub-agent.
	DelegatedJTI string
	// EKPin names the TPM the agent's key must live in: "sha256:HEX" of
	// its endorsement key, EKPinCA until a TPM certified by a trusted maker
	// first enrolls, or "" for an agent whose key need not be in a TPM.
	EKPin string
}

// EKPinCA is the pin of an agent that any TPM with a trusted EK
// certificate may enroll, once.
const EKPinCA = "ek-ca"

// JoinToken is a one-time enrollment credential. Only its hash is stored.
type JoinToken struct {
	Hash  string
	Agent string
	// Component is the SPIFFE ID a component's token enrolls (Agent is
	// then empty).
	Component string
	ExpiresAt time.Time
	CreatedAt time.Time
	CreatedBy string
	UsedAt    time.Time // zero while unused
}

// Cert is an issued certificate.
type Cert struct {
	Serial        string // lowercase hex
	SPIFFEID      string
	Agent         string // empty for operator and component certificates
	NotBefore     time.Time
	NotAfter      time.Time
	IssuedAt      time.Time
	IssuedBy      string
	DER           []byte
	RevokedAt     time.Time // zero while valid
	RevokedReason string
	// X5T is the base64url SHA-256 thumbprint of DER, the value that
	// certificate-bound tokens carry in cnf.x5t#S256.
	X5T string
}

// Revoked reports whether the certificate has been revoked.
func (c Cert) Revoked() bool { return !c.RevokedAt.IsZero() }

// Store is what the identity lifecycle needs from storage. Errors wrap the
// fault kinds: fault.NotFound for a missing row, fault.Conflict for a
// duplicate or a state that forbids the change.
type Store interface {
	CreateAgent(ctx context.Context, a Agent) error
	GetAgent(ctx context.Context, name string) (Agent, error)
	ListAgents(ctx context.Context) ([]Agent, error)
	SetAgentStatus(ctx context.Context, name string, s Status, at time.Time) error
	SetAgentScopes(ctx context.Context, name string, scopes []string, at time.Time) error
	// SetAgentEK replaces the agent's EK pin, if it is still was;
	// fault.NotFound otherwise.
	SetAgentEK(ctx context.Context, name, was, ek string, at time.Time) error
	// AgentsDelegatedBy lists the sub-agents created with token jti.
	AgentsDelegatedBy(ctx context.Context, jti string) ([]string, error)

	CreateJoinToken(ctx context.Context, t JoinToken) error
	GetJoinToken(ctx context.Context, hash string) (JoinToken, error)

	// IssueCert records an issued certificate in one transaction that,
	// for an agent's certificate, first checks under lock that the agent is
	// still active, and, if redeemHash is set, marks that join token used.
	// It fails with fault.Conflict, recording nothing, if the agent is no
	// longer active or the token is already used or expired at now.
	IssueCert(ctx context.Context, c Cert, redeemHash string, now time.Time) error
	GetCert(ctx context.Context, serial string) (Cert, error)
	GetCertByThumbprint(ctx context.Context, x5t string) (Cert, error)
	ListCerts(ctx context.Context, agent string) ([]Cert, error)
	// RevokeTree revokes, in one transaction, every sub-agent below root
	// (and root itself if includeRoot): their status becomes revoked and
	// every unrevoked certificate of theirs is revoked. It returns the
	// agents and serials it revoked; fault.NotFound if root does not exist.
	RevokeTree(ctx context.Context, root string, includeRoot bool, at time.Time, reason string) (agents, serials []string, err error)
	// RevokeCertsByID revokes every unrevoked certificate with SPIFFE ID
	// id (a component's) and returns their serials.
	RevokeCertsByID(ctx context.Context, id string, at time.Time, reason string) ([]string, error)
	// RevokedCerts lists revoked certificates that have not expired at now.
	RevokedCerts(ctx context.Context, now time.Time) ([]Cert, error)
}
