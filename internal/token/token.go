// Package token is Bulkhead's OAuth 2.0 authorization server for agents:
// minutes-long JWT access tokens (RFC 9068) bound to the agent's X.509-SVID
// (RFC 8705), issued to clients authenticated by that SVID over mTLS
// (tls_client_auth) or by a JWT signed with its key (private_key_jwt, RFC
// 7523) — never by a static secret. Sub-agents get attenuated credentials by
// token exchange (RFC 8693): a new SVID under the parent's SPIFFE ID and a
// token whose act claim names every ancestor, narrower in scope, no longer
// lived, and revoked with any ancestor.
//
// Resource servers verify tokens locally against the JWKS or ask the
// introspection endpoint (RFC 7662); revocation (RFC 7009) takes effect at
// introspection at once and is published on the audit event stream.
package token

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

// Lifetimes.
const (
	DefaultTTL = 5 * time.Minute
	// MaxTTL is the hard maximum of any access token.
	MaxTTL          = 15 * time.Minute
	DefaultMaxDepth = 3
	// DefaultRotation is how often the signing key rotates.
	DefaultRotation = 24 * time.Hour
	// leeway absorbs clock skew when checking times.
	leeway = 30 * time.Second
)

// Actions recorded by the token service.
const (
	ActionTokenIssue    = "token.issue"
	ActionTokenExchange = "token.exchange"
	ActionTokenRevoke   = "token.revoke"
	ActionResourceAdd   = "resource.add"
	ActionResourceDel   = "resource.remove"
)

// Identities is what the token service needs from the identity lifecycle.
type Identities interface {
	peer.Authenticator
	ActiveAgent(ctx context.Context, name string) (identity.Agent, error)
	CreateSubAgent(ctx context.Context, req identity.SubAgentRequest) (identity.Agent, identity.Issued, error)
	CertStatus(ctx context.Context, x5t string) (identity.Cert, error)
	RevokeDelegated(ctx context.Context, by audit.Actor, jti, reason string) ([]string, error)
	BundlePEM() []byte
}

// TaskChecker says whether an agent may work in a task now (see
// internal/elevation): a token issued for a task carries it in its task
// claim, and every decision made with the token reads that task's state.
type TaskChecker interface {
	// TaskFor returns the deadline of task if it is open and agent (a
	// SPIFFE ID) works in it. Errors wrap fault kinds.
	TaskFor(ctx context.Context, agent, task string) (time.Time, error)
}

// Recorder commits audit events; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Store is what the token service keeps.
type Store interface {
	KeyStore
	CreateResource(ctx context.Context, r Resource) error
	GetResource(ctx context.Context, uri string) (Resource, error)
	ListResources(ctx context.Context) ([]Resource, error)
	DeleteResource(ctx context.Context, uri string) error
	// RevokeToken records a revoked token id (idempotent).
	RevokeToken(ctx context.Context, r Revoked) error
	// RevokedTokens returns which of jtis are revoked.
	RevokedTokens(ctx context.Context, jtis []string) (map[string]bool, error)
	// UseClientAssertion records a client assertion id; fault.Conflict if
	// it was used before.
	UseClientAssertion(ctx context.Context, jti string, expires time.Time) error
}

// Resource is a registered audience (RFC 8707) and the scopes it accepts;
// no scopes means any.
type Resource struct {
	URI       string
	Scopes    []string
	CreatedAt time.Time
	CreatedBy string
}

// Revoked is a revoked token id.
type Revoked struct {
	JTI       string
	RevokedAt time.Time
	ExpiresAt time.Time
	RevokedBy string
	Reason    string
}

// Config holds a Service's dependencies. Store, Identities, Box, Audit,
// Bundle, Clock and Logger are required.
type Config struct {
	Store      Store
	Identities Identities
	Box        *secretbox.Box
	Audit      Recorder
	// Bundle verifies the SVID chains in private_key_jwt assertions.
	Bundle *x509bundle.Bundle
	Clock  clock.Clock
	Logger *slog.Logger
	// HardwareKeys, if set, holds the signing keys in a PKCS#11 token
	// (optional; without it they are sealed in the store).
	HardwareKeys HardwareKeys
	// Issuer is the iss of every token, an https URL; it can also be set
	// later with SetIssuer (when the listen port is known).
	Issuer string
	// TTL of access tokens: DefaultTTL if zero, at most MaxTTL.
	TTL time.Duration
	// MaxDepth of delegation: DefaultMaxDepth if zero.
	MaxDepth int
	// Rotation period of the signing key: DefaultRotation if zero.
	Rotation time.Duration
	// Tasks checks the task a token is asked for; nil means tasks are not
	// supported, and a request naming one is refused (invalid_request).
	Tasks TaskChecker
}

// Service is the authorization server.
type Service struct {
	store    Store
	ids      Identities
	audit    Recorder
	bundle   *x509bundle.Bundle
	clock    clock.Clock
	logger   *slog.Logger
	ttl      time.Duration
	maxDepth int
	keys     *keyset
	tasks    TaskChecker

	mu     sync.RWMutex
	issuer string

	resMu      sync.Mutex
	resources  map[string]cachedResource
	scopeCache scopeCache
}

type cachedResource struct {
	r  Resource
	at time.Time
}

// New builds the service and loads (or creates) its signing key.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Identities == nil || cfg.Box == nil || cfg.Audit == nil || cfg.Bundle == nil || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("token: store, identities, secret box, audit log, bundle, clock and logger are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 10*time.Second || cfg.TTL > MaxTTL {
		return nil, fmt.Errorf("token: TTL %s is outside [10s, %s]", cfg.TTL, MaxTTL)
	}
	if cfg.MaxDepth == 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.MaxDepth < 0 || cfg.MaxDepth > 16 {
		return nil, fmt.Errorf("token: delegation depth %d is outside [0, 16]", cfg.MaxDepth)
	}
	if cfg.Rotation == 0 {
		cfg.Rotation = DefaultRotation
	}
	if cfg.Rotation < 4*MaxTTL {
		return nil, fmt.Errorf("token: key rotation period %s is shorter than %s", cfg.Rotation, 4*MaxTTL)
	}
	s := &Service{store: cfg.Store, ids: cfg.Identities, audit: cfg.Audit, bundle: cfg.Bundle, clock: cfg.Clock,
		logger: cfg.Logger, ttl: cfg.TTL, maxDepth: cfg.MaxDepth, issuer: strings.TrimRight(cfg.Issuer, "/"), tasks: cfg.Tasks,
		keys: &keyset{store: cfg.Store, box: cfg.Box, hw: cfg.HardwareKeys, period: cfg.Rotation, lead: min(cfg.Rotation/4, time.Hour), maxTTL: MaxTTL}}
	if err := s.keys.refresh(ctx, s.clock.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

// SetIssuer sets the issuer URL.
func (s *Service) SetIssuer(issuer string) {
	s.mu.Lock()
	s.issuer = strings.TrimRight(issuer, "/")
	s.mu.Unlock()
}

// Issuer returns the issuer URL.
func (s *Service) Issuer() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.issuer
}

// Run rotates the signing key on schedule until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	every := min(s.keys.lead/4, time.Minute)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(every):
		}
		if err := s.keys.refresh(ctx, s.clock.Now()); err != nil {
			s.logger.Error("token signing key refresh failed; retrying", "err", err)
		}
	}
}

// RefreshKeys reloads and rotates signing keys now (tests, operators).
func (s *Service) RefreshKeys(ctx context.Context) error { return s.keys.refresh(ctx, s.clock.Now()) }

// Verify checks a presented access token completely: signature by a
// published key, type, issuer, time, revocation of it and of every token in
// its delegation chain, and that its subject, every ancestor, and the
// certificate it is bound to are still good. Errors explain why.
func (s *Service) Verify(ctx context.Context, raw string) (*Claims, error) {
	now := s.clock.Now()
	c, err := Parse(raw, s.keys.verifier(now))
	if err != nil {
		return nil, err
	}
	if c.Issuer != s.Issuer() {
		return nil, fmt.Errorf("token issuer %q is not this control plane", c.Issuer)
	}
	if err := c.CheckTime(now, leeway); err != nil {
		return nil, err
	}
	revoked, err := s.store.RevokedTokens(ctx, append([]string{c.ID}, c.Delegation...))
	if err != nil {
		return nil, fmt.Errorf("%w: revocation status unknown: %w", fault.Unavailable, err)
	}
	if revoked[c.ID] {
		return nil, errors.New("token was revoked")
	}
	for _, j := range c.Delegation {
		if revoked[j] {
			return nil, errors.New("a token in its delegation chain was revoked")
		}
	}
	name, err := agentName(c.Subject)
	if err != nil {
		return nil, err
	}
	if _, err := s.ids.ActiveAgent(ctx, name); err != nil {
		return nil, err
	}
	cert, err := s.ids.CertStatus(ctx, c.Cnf.X5TS256)
	if err != nil {
		return nil, fmt.Errorf("bound certificate: %w", err)
	}
	if cert.Revoked() || cert.SPIFFEID != c.Subject {
		return nil, errors.New("the certificate the token is bound to was revoked or is not the subject's")
	}
	return c, nil
}

// agentName extracts the agent name from an agent SPIFFE ID string.
func agentName(id string) (string, error) {
	i := strings.Index(id, peer.AgentPrefix)
	if !strings.HasPrefix(id, "spiffe://") || i < 0 {
		return "", fmt.Errorf("token subject %q is not an agent", id)
	}
	return id[i+len(peer.AgentPrefix):], nil
}

// boundTo reports whether cert is the one a token's cnf names.
func boundTo(c *Claims, cert *x509.Certificate) bool {
	return c.Cnf != nil && c.Cnf.X5TS256 == identity.Thumbprint(cert)
}

// Key returns the published verification key kid, for verifiers in
// the same process (the all-in-one gateway).
func (s *Service) Key(_ context.Context, kid string) (any, bool) {
	return s.keys.verifier(s.clock.Now())(kid)
}

// TTL is the lifetime of the access tokens the service issues.
func (s *Service) TTL() time.Duration { return s.ttl }
