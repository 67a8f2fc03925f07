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

// Agent is a registered agent.
type Agent struct {
	Name      string
	SPIFFEID  string
	Status    Status
	SVIDTTL   time.Duration
	CreatedAt time.Time
	CreatedBy string
	UpdatedAt time.Time
}

// JoinToken is a one-time enrollment credential. Only its hash is stored.
type JoinToken struct {
	Hash      string
	Agent     string
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

	CreateJoinToken(ctx context.Context, t JoinToken) error
	GetJoinToken(ctx context.Context, hash string) (JoinToken, error)

	// IssueCert records an issued certificate in one transaction that,
	// for an agent's certificate, first checks under lock that the agent is
	// still active, and, if redeemHash is set, marks that join token used.
	// It fails with fault.Conflict, recording nothing, if the agent is no
	// longer active or the token is already used or expired at now.
	IssueCert(ctx context.Context, c Cert, redeemHash string, now time.Time) error
	GetCert(ctx context.Context, serial string) (Cert, error)
	ListCerts(ctx context.Context, agent string) ([]Cert, error)
	// RevokeAgent sets the agent's status to revoked and revokes every one
	// of its unrevoked certificates in one transaction, returning their
	// serials.
	RevokeAgent(ctx context.Context, agent string, at time.Time, reason string) ([]string, error)
	// RevokedCerts lists revoked certificates that have not expired at now.
	RevokedCerts(ctx context.Context, now time.Time) ([]Cert, error)
}
