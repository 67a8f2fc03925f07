package console

import (
	"context"
	"time"
)

// Passkey is an operator's registered WebAuthn credential.
type Passkey struct {
	ID       []byte
	Operator string // the operator's SPIFFE ID
	// Credential is the webauthn.Credential, JSON: its public key, sign
	// count and flags.
	Credential []byte
	CreatedAt  time.Time
	LastUsedAt time.Time
	// RevokedAt is when the passkey stopped working (its operator was
	// revoked); zero while it works.
	RevokedAt time.Time
}

// Link is a one-time passkey registration link; only its hash is stored.
type Link struct {
	Hash      string
	Operator  string
	ExpiresAt time.Time
	CreatedAt time.Time
	CreatedBy string
	UsedAt    time.Time
}

// Store is what the console keeps. Errors wrap fault kinds: fault.NotFound
// for a missing row, fault.Conflict for a duplicate or a used link.
type Store interface {
	CreatePasskeyLink(ctx context.Context, l Link) error
	PasskeyLink(ctx context.Context, hash string) (Link, error)
	// AddPasskey stores p and marks link used in one transaction; it fails
	// with fault.Conflict if the link is used or expired at now.
	AddPasskey(ctx context.Context, p Passkey, link string, now time.Time) error
	Passkey(ctx context.Context, id []byte) (Passkey, error)
	PasskeysOf(ctx context.Context, operator string) ([]Passkey, error)
	// UsePasskey stores a credential's new state after a sign-in or an
	// approval, if its signature counter grew past the stored one (or
	// both are 0: an authenticator without a counter); fault.Conflict if
	// it did not, fault.NotFound for a revoked passkey.
	UsePasskey(ctx context.Context, id, credential []byte, signCount uint32, at time.Time) error
	// RevokePasskeys revokes every working passkey of operator and says
	// how many.
	RevokePasskeys(ctx context.Context, operator string, at time.Time) (int64, error)
	// SpendChallenge records a ceremony's challenge as answered until
	// expires; fault.Conflict if it already was. Spent challenges past
	// their expiry at now are forgotten.
	SpendChallenge(ctx context.Context, hash string, expires, now time.Time) error
}
