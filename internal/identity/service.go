// Package identity is the agent identity lifecycle: registration, one-time
// join tokens, enrollment by CSR, renewal over mTLS, revocation, and the
// per-request check that a presented certificate may still act.
//
// Every issuance and revocation is recorded in the audit log before it takes
// effect, with the identity that asked for it; if the record cannot be
// written, nothing is issued or changed.
package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Recorder commits audit events; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Limits on lifetimes an operator may ask for.
const (
	DefaultSVIDTTL      = time.Hour
	MinSVIDTTL          = time.Minute
	DefaultJoinTokenTTL = 10 * time.Minute
	MaxJoinTokenTTL     = 24 * time.Hour
)

// Config holds a Service's dependencies; all are required.
type Config struct {
	Store  Store
	CA     *ca.Authority
	Audit  Recorder
	Clock  clock.Clock
	Logger *slog.Logger
	// DefaultSVIDTTL applies to agents created without a TTL; zero means
	// DefaultSVIDTTL.
	DefaultSVIDTTL time.Duration
	// Sealer seals TPM challenge sessions; without it, attested
	// enrollment is refused.
	Sealer Sealer
	// Attestation checks TPM proofs (its EK CAs and PCR policy).
	Attestation attestation.Verifier
}

// Service runs the identity lifecycle.
type Service struct {
	store      Store
	ca         *ca.Authority
	audit      Recorder
	clock      clock.Clock
	logger     *slog.Logger
	defaultTTL time.Duration
	sealer     Sealer
	attest     attestation.Verifier
	// operatorRevoked revokes an operator's other credentials.
	operatorRevoked atomic.Pointer[OperatorRevoker]

	crlMu  sync.Mutex
	crl    []byte
	crlAt  time.Time
	crlNum int64

	cache authCache
}

var _ peer.Authenticator = (*Service)(nil)

// New returns a Service. It fails if a dependency is missing: there is no
// degraded mode.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.CA == nil || cfg.Audit == nil || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("identity: store, CA, audit log, clock and logger are required")
	}
	ttl := cfg.DefaultSVIDTTL
	if ttl == 0 {
		ttl = DefaultSVIDTTL
	}
	if err := checkSVIDTTL(ttl); err != nil {
		return nil, err
	}
	return &Service{store: cfg.Store, ca: cfg.CA, audit: cfg.Audit, clock: cfg.Clock, logger: cfg.Logger, defaultTTL: ttl,
		sealer: cfg.Sealer, attest: cfg.Attestation}, nil
}

// TrustDomain is the trust domain the service issues in.
func (s *Service) TrustDomain() spiffeid.TrustDomain { return s.ca.TrustDomain() }

func checkSVIDTTL(ttl time.Duration) error {
	if ttl < MinSVIDTTL || ttl > ca.MaxSVIDTTL {
		return fmt.Errorf("%w: SVID TTL %s is outside [%s, %s]", fault.Invalid, ttl, MinSVIDTTL, ca.MaxSVIDTTL)
	}
	return nil
}

// AgentID returns the SPIFFE ID of agent name (a top-level name, or a
// sub-agent's PARENT/sub/ID path).
func (s *Service) AgentID(name string) (spiffeid.ID, error) {
	if err := ValidateAgentName(name); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromPath(s.ca.TrustDomain(), "/agent/"+name)
}

// act records ev (decision allow) and only then runs do. If do fails, a
// second record says so, so the log never claims an effect that did not
// happen; if the first record cannot be written, do never runs.
func (s *Service) act(ctx context.Context, ev audit.Event, do func() error) error {
	return audit.Act(ctx, s.audit, s.logger, ev, do)
}

// deny records a refusal and returns why, marked as recorded so that
// callers do not record it twice. The refusal stands even if it cannot be
// recorded.
func (s *Service) deny(ctx context.Context, ev audit.Event, why error) error {
	if audit.Refuse(ctx, s.audit, s.logger, ev, why) {
		return recordedError{why}
	}
	return why
}

// recordedError marks a refusal that is already in the audit log.
type recordedError struct{ error }

func (e recordedError) Unwrap() error { return e.error }

// IsRecorded reports whether err is a refusal this package already
// recorded.
func IsRecorded(err error) bool {
	var r recordedError
	return errors.As(err, &r)
}

// CreateAgent registers a top-level agent that may request scopes. ttl zero
// means the default SVID TTL.
func (s *Service) CreateAgent(ctx context.Context, by audit.Actor, name string, ttl time.Duration, scopes []string) (Agent, error) {
	if err := ValidateName(name); err != nil {
		return Agent{}, err
	}
	id, err := s.AgentID(name)
	if err != nil {
		return Agent{}, err
	}
	if err := ValidateScopes(scopes); err != nil {
		return Agent{}, err
	}
	if ttl == 0 {
		ttl = s.defaultTTL
	}
	if err := checkSVIDTTL(ttl); err != nil {
		return Agent{}, err
	}
	if _, err := s.store.GetAgent(ctx, name); err == nil {
		return Agent{}, fmt.Errorf("%w: agent %q already exists", fault.Conflict, name)
	} else if !errors.Is(err, fault.NotFound) {
		return Agent{}, err
	}
	now := s.clock.Now()
	a := Agent{Name: name, SPIFFEID: id.String(), Status: StatusActive, SVIDTTL: ttl, CreatedAt: now, CreatedBy: by.ID, UpdatedAt: now, Scopes: scopes}
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionAgentCreate, Target: a.SPIFFEID,
		Detail: map[string]string{"svid_ttl": ttl.String(), "scopes": strings.Join(scopes, " ")}}, func() error { return s.store.CreateAgent(ctx, a) })
	return a, err
}

// SetScopes replaces the scopes a top-level agent may request. Tokens
// already issued keep their scope until they expire (minutes).
func (s *Service) SetScopes(ctx context.Context, by audit.Actor, name string, scopes []string) (Agent, error) {
	if err := ValidateScopes(scopes); err != nil {
		return Agent{}, err
	}
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return Agent{}, err
	}
	if a.Parent != "" {
		return Agent{}, fmt.Errorf("%w: a sub-agent's scope is fixed by its delegation", fault.Invalid)
	}
	now := s.clock.Now()
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: ActionAgentScopes, Target: a.SPIFFEID,
		Detail: map[string]string{"scopes": strings.Join(scopes, " "), "previous_scopes": strings.Join(a.Scopes, " ")}},
		func() error { return s.store.SetAgentScopes(ctx, name, scopes, now) })
	if err != nil {
		return Agent{}, err
	}
	s.cache.clear()
	a.Scopes, a.UpdatedAt = scopes, now
	return a, nil
}

// GetAgent returns an agent.
func (s *Service) GetAgent(ctx context.Context, name string) (Agent, error) {
	if err := ValidateAgentName(name); err != nil {
		return Agent{}, err
	}
	return s.store.GetAgent(ctx, name)
}

// ListAgents returns every agent.
func (s *Service) ListAgents(ctx context.Context) ([]Agent, error) { return s.store.ListAgents(ctx) }

// AgentCerts returns an agent's certificates.
func (s *Service) AgentCerts(ctx context.Context, name string) ([]Cert, error) {
	return s.store.ListCerts(ctx, name)
}

// CreateJoinToken makes a one-time enrollment token for an active agent. The
// token is returned once; only its hash is kept.
func (s *Service) CreateJoinToken(ctx context.Context, by audit.Actor, name string, ttl time.Duration) (string, time.Time, error) {
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return "", time.Time{}, err
	}
	if a.Status != StatusActive {
		return "", time.Time{}, fmt.Errorf("%w: agent %q is %s; enable it first", fault.Conflict, name, a.Status)
	}
	if a.Parent != "" {
		return "", time.Time{}, fmt.Errorf("%w: sub-agents are created by delegation, not enrolled", fault.Invalid)
	}
	return s.newJoinToken(ctx, by, JoinToken{Agent: name}, a.SPIFFEID, ttl)
}

// CreateComponentJoinToken makes a one-time enrollment token for component
// KIND/NAME (a gateway), so that it can enroll from its own machine with a
// key generated there, holding no operator credential. Only operators may.
func (s *Service) CreateComponentJoinToken(ctx context.Context, by audit.Actor, kind, name string, ttl time.Duration) (string, time.Time, error) {
	id, err := s.ComponentID(kind, name)
	if err != nil {
		return "", time.Time{}, err
	}
	if by.Kind != audit.ActorOperator {
		return "", time.Time{}, s.deny(ctx, audit.Event{Actor: by, Action: audit.ActionJoinTokenCreate, Target: id.String()},
			fmt.Errorf("%w: only operators create component join tokens", fault.Forbidden))
	}
	return s.newJoinToken(ctx, by, JoinToken{Component: id.String()}, id.String(), ttl)
}

// newJoinToken stores t (for target, a SPIFFE ID) with a fresh secret,
// recording it first, and returns the token.
func (s *Service) newJoinToken(ctx context.Context, by audit.Actor, t JoinToken, target string, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < 0 || ttl > MaxJoinTokenTTL {
		return "", time.Time{}, fmt.Errorf("%w: join token TTL %s is outside (0, %s]", fault.Invalid, ttl, MaxJoinTokenTTL)
	}
	secret, err := NewJoinSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.clock.Now()
	t.Hash, t.ExpiresAt, t.CreatedAt, t.CreatedBy = hashSecret(secret), now.Add(ttl), now, by.ID
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionJoinTokenCreate, Target: target,
		// The hash identifies the token in later records without revealing it.
		Digests: map[string]string{"join_token": "sha256:" + t.Hash},
		Detail:  map[string]string{"expires_at": t.ExpiresAt.UTC().Format(time.RFC3339)}},
		func() error { return s.store.CreateJoinToken(ctx, t) })
	if err != nil {
		return "", time.Time{}, err
	}
	return JoinTokenString(secret, s.ca.RootFingerprint()), t.ExpiresAt, nil
}

// Issued is a freshly issued SVID.
type Issued struct {
	Leaf  *x509.Certificate
	Chain []*x509.Certificate // leaf first
}

// ChainPEM is svid.pem: the leaf then the intermediate.
func (i Issued) ChainPEM() []byte { return ca.EncodeCerts(i.Chain...) }

// BundlePEM is svid_bundle.pem.
func (s *Service) BundlePEM() []byte { return s.ca.BundlePEM() }

// SPIFFEID is the issued SVID's SPIFFE ID.
func (i Issued) SPIFFEID() spiffeid.ID {
	id, _ := spiffeid.FromURI(i.Leaf.URIs[0])
	return id
}
