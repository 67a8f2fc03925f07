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
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

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
}

// Service runs the identity lifecycle.
type Service struct {
	store      Store
	ca         *ca.Authority
	audit      Recorder
	clock      clock.Clock
	logger     *slog.Logger
	defaultTTL time.Duration

	crlMu  sync.Mutex
	crl    []byte
	crlAt  time.Time
	crlNum int64
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
	return &Service{store: cfg.Store, ca: cfg.CA, audit: cfg.Audit, clock: cfg.Clock, logger: cfg.Logger, defaultTTL: ttl}, nil
}

// TrustDomain is the trust domain the service issues in.
func (s *Service) TrustDomain() spiffeid.TrustDomain { return s.ca.TrustDomain() }

func checkSVIDTTL(ttl time.Duration) error {
	if ttl < MinSVIDTTL || ttl > ca.MaxSVIDTTL {
		return fmt.Errorf("%w: SVID TTL %s is outside [%s, %s]", fault.Invalid, ttl, MinSVIDTTL, ca.MaxSVIDTTL)
	}
	return nil
}

// AgentID returns the SPIFFE ID of agent name.
func (s *Service) AgentID(name string) (spiffeid.ID, error) {
	if err := ValidateName(name); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(s.ca.TrustDomain(), "agent", name)
}

// act records ev (decision allow) and only then runs do. If do fails, a
// second record says so, so the log never claims an effect that did not
// happen; if the first record cannot be written, do never runs.
func (s *Service) act(ctx context.Context, ev audit.Event, do func() error) error {
	ev.Decision = audit.Allow
	rec, err := s.audit.Record(ctx, ev)
	if err != nil {
		return fmt.Errorf("%w: %s refused because the audit log is unavailable", fault.Unavailable, ev.Action)
	}
	if err := do(); err != nil {
		failed := ev
		failed.Decision = audit.Failed
		failed.Time = time.Time{}
		failed.Reasons = []string{err.Error()}
		failed.Detail = map[string]string{"allowed_seq": fmt.Sprint(rec.Seq)}
		if _, aerr := s.audit.Record(ctx, failed); aerr != nil {
			s.logger.Error("could not record a failed action", "action", ev.Action, "err", aerr)
		}
		return err
	}
	return nil
}

// deny records a refusal and returns why. The refusal stands even if it
// cannot be recorded.
func (s *Service) deny(ctx context.Context, ev audit.Event, why error) error {
	ev.Decision = audit.Deny
	ev.Reasons = append(ev.Reasons, why.Error())
	if _, err := s.audit.Record(ctx, ev); err != nil {
		s.logger.Error("could not record a denial", "action", ev.Action, "reason", why, "err", err)
	}
	return why
}

// CreateAgent registers an agent. ttl zero means the default SVID TTL.
func (s *Service) CreateAgent(ctx context.Context, by audit.Actor, name string, ttl time.Duration) (Agent, error) {
	id, err := s.AgentID(name)
	if err != nil {
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
	a := Agent{Name: name, SPIFFEID: id.String(), Status: StatusActive, SVIDTTL: ttl, CreatedAt: now, CreatedBy: by.ID, UpdatedAt: now}
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionAgentCreate, Target: a.SPIFFEID,
		Detail: map[string]string{"svid_ttl": ttl.String()}}, func() error { return s.store.CreateAgent(ctx, a) })
	return a, err
}

// GetAgent returns an agent.
func (s *Service) GetAgent(ctx context.Context, name string) (Agent, error) {
	if err := ValidateName(name); err != nil {
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
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < 0 || ttl > MaxJoinTokenTTL {
		return "", time.Time{}, fmt.Errorf("%w: join token TTL %s is outside (0, %s]", fault.Invalid, ttl, MaxJoinTokenTTL)
	}
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return "", time.Time{}, err
	}
	if a.Status != StatusActive {
		return "", time.Time{}, fmt.Errorf("%w: agent %q is %s; enable it first", fault.Conflict, name, a.Status)
	}
	secret, err := NewJoinSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.clock.Now()
	t := JoinToken{Hash: hashSecret(secret), Agent: name, ExpiresAt: now.Add(ttl), CreatedAt: now, CreatedBy: by.ID}
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionJoinTokenCreate, Target: a.SPIFFEID,
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

// Enroll trades a join token and a CSR for the token's agent's first SVID.
func (s *Service) Enroll(ctx context.Context, token string, csrPEM []byte) (Issued, error) {
	ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAnonymous}, Action: audit.ActionSVIDIssue,
		Digests: map[string]string{"csr": audit.Digest(csrPEM)}, Detail: map[string]string{"via": "join_token"}}
	pt, err := ParseJoinToken(token)
	if err != nil {
		return Issued{}, s.deny(ctx, ev, err)
	}
	ev.Digests["join_token"] = "sha256:" + pt.Hash()
	t, err := s.store.GetJoinToken(ctx, pt.Hash())
	if errors.Is(err, fault.NotFound) {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: unknown join token", fault.Unauthenticated))
	}
	if err != nil {
		return Issued{}, err
	}
	a, err := s.store.GetAgent(ctx, t.Agent)
	if err != nil {
		return Issued{}, err
	}
	// From here the caller holds a real token for this agent, so the
	// records name the agent as the actor.
	ev.Actor = audit.Actor{Kind: audit.ActorAgent, ID: a.SPIFFEID}
	ev.Target = a.SPIFFEID
	now := s.clock.Now()
	switch {
	case !t.UsedAt.IsZero():
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: join token was already used at %s", fault.Unauthenticated, t.UsedAt.Format(time.RFC3339)))
	case !now.Before(t.ExpiresAt):
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: join token expired at %s", fault.Unauthenticated, t.ExpiresAt.Format(time.RFC3339)))
	case a.Status != StatusActive:
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q is %s", fault.Forbidden, a.Name, a.Status))
	}
	id, err := spiffeid.FromString(a.SPIFFEID)
	if err != nil {
		return Issued{}, fmt.Errorf("identity: stored SPIFFE ID: %w", err)
	}
	return s.issue(ctx, ev, id, a.Name, csrPEM, a.SVIDTTL, pt.Hash(), nil)
}

// Renew issues a new SVID for a new key to a caller authenticated by its
// current SVID (p comes from Authenticate, so it is not revoked and its
// agent is active).
func (s *Service) Renew(ctx context.Context, p peer.Principal, csrPEM []byte) (Issued, error) {
	ev := audit.Event{Actor: p.Actor(), Action: audit.ActionSVIDRenew, Target: p.ID.String(),
		Digests: map[string]string{"csr": audit.Digest(csrPEM)},
		Detail:  map[string]string{"previous_serial": ca.SerialHex(p.Cert)}}
	ttl := p.Cert.NotAfter.Sub(p.Cert.NotBefore) - ca.Backdate
	agent := ""
	if p.Kind == audit.ActorAgent {
		a, err := s.store.GetAgent(ctx, p.Name)
		if err != nil {
			return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q: %w", fault.Forbidden, p.Name, err))
		}
		agent, ttl = a.Name, a.SVIDTTL
	}
	return s.issue(ctx, ev, p.ID, agent, csrPEM, ttl, "", p.Cert.PublicKey)
}

// issue checks the CSR, signs, records, and persists. oldKey, if set, must
// differ from the CSR's key: renewal rotates the key.
func (s *Service) issue(ctx context.Context, ev audit.Event, id spiffeid.ID, agent string, csrPEM []byte, ttl time.Duration, redeem string, oldKey crypto.PublicKey) (Issued, error) {
	csr, err := ca.ParseCSR(csrPEM, id)
	if err != nil {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: %w", fault.Invalid, err))
	}
	if oldKey != nil {
		if k, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && k.Equal(oldKey) {
			return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: renewal must use a new key", fault.Invalid))
		}
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: id, PublicKey: csr.PublicKey, TTL: ttl}, agent, redeem)
}

func (s *Service) sign(ctx context.Context, ev audit.Event, req ca.SVIDRequest, agent, redeem string) (Issued, error) {
	leaf, err := s.ca.SignSVID(req)
	if err != nil {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: %w", fault.Invalid, err))
	}
	now := s.clock.Now()
	c := Cert{Serial: ca.SerialHex(leaf), SPIFFEID: req.ID.String(), Agent: agent, NotBefore: leaf.NotBefore,
		NotAfter: leaf.NotAfter, IssuedAt: now, IssuedBy: ev.Actor.String(), DER: leaf.Raw}
	ev.Time = now
	if ev.Target == "" {
		ev.Target = c.SPIFFEID
	}
	if ev.Detail == nil {
		ev.Detail = map[string]string{}
	}
	ev.Detail["serial"] = c.Serial
	ev.Detail["not_after"] = c.NotAfter.UTC().Format(time.RFC3339)
	err = s.act(ctx, ev, func() error {
		err := s.store.IssueCert(ctx, c, redeem, now)
		if errors.Is(err, fault.Conflict) {
			return fmt.Errorf("%w: %w", fault.Unauthenticated, err)
		}
		return err
	})
	if err != nil {
		return Issued{}, err
	}
	return Issued{Leaf: leaf, Chain: []*x509.Certificate{leaf, s.ca.Intermediate()}}, nil
}

// IssueDirect issues an SVID for a key the caller holds, without a CSR: the
// control plane's own certificates (its serving certificate and the
// bootstrap operator credential) and, later, operator-issued credentials.
// by is who asked; action names the record.
func (s *Service) IssueDirect(ctx context.Context, by audit.Actor, action string, id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration, dns []string, ips []net.IP) (Issued, error) {
	if id.TrustDomain() != s.ca.TrustDomain() {
		return Issued{}, fmt.Errorf("%w: %s is not in trust domain %s", fault.Invalid, id, s.ca.TrustDomain())
	}
	kind, _, err := peer.Classify(id)
	if err != nil {
		return Issued{}, err
	}
	if kind == audit.ActorAgent {
		return Issued{}, fmt.Errorf("%w: agents enroll with a join token", fault.Invalid)
	}
	ev := audit.Event{Actor: by, Action: action, Target: id.String()}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: id, PublicKey: pub, TTL: ttl, DNSNames: dns, IPs: ips}, "", "")
}

// Revoke revokes every certificate of an agent and blocks renewal. The agent
// can enroll again only after an operator enables it and issues a new join
// token.
func (s *Service) Revoke(ctx context.Context, by audit.Actor, name, reason string) ([]string, error) {
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "revoked by operator"
	}
	now := s.clock.Now()
	var serials []string
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionAgentRevoke, Target: a.SPIFFEID, Reasons: []string{reason}},
		func() error {
			var err error
			serials, err = s.store.RevokeAgent(ctx, name, now, reason)
			return err
		})
	if err != nil {
		return nil, err
	}
	// One record per certificate, for subscribers (gateways) that track
	// serials, and so a search by serial finds its revocation.
	for _, sn := range serials {
		if _, err := s.audit.Record(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionSVIDRevoke, Target: a.SPIFFEID,
			Decision: audit.Allow, Reasons: []string{reason}, Detail: map[string]string{"serial": sn}}); err != nil {
			s.logger.Error("revocation done but its per-certificate record failed", "serial", sn, "err", err)
		}
	}
	s.invalidateCRL()
	return serials, nil
}

// SetEnabled disables or enables an agent. A disabled agent cannot
// authenticate, renew or enroll; its certificates are not revoked.
func (s *Service) SetEnabled(ctx context.Context, by audit.Actor, name string, enabled bool) (Agent, error) {
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return Agent{}, err
	}
	action, status := audit.ActionAgentDisable, StatusDisabled
	if enabled {
		action, status = audit.ActionAgentEnable, StatusActive
	}
	now := s.clock.Now()
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: action, Target: a.SPIFFEID,
		Detail: map[string]string{"previous_status": string(a.Status)}},
		func() error { return s.store.SetAgentStatus(ctx, name, status, now) })
	if err != nil {
		return Agent{}, err
	}
	a.Status, a.UpdatedAt = status, now
	return a, nil
}

// Authenticate accepts a certificate that the TLS layer verified against the
// bundle only if Bulkhead issued it, it is not revoked, and, for an agent,
// the agent is active. Any store error refuses.
func (s *Service) Authenticate(ctx context.Context, leaf *x509.Certificate) (peer.Principal, error) {
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return peer.Principal{}, fmt.Errorf("%w: %w", fault.Unauthenticated, err)
	}
	if id.TrustDomain() != s.ca.TrustDomain() {
		return peer.Principal{}, fmt.Errorf("%w: %s is not in trust domain %s", fault.Unauthenticated, id, s.ca.TrustDomain())
	}
	kind, name, err := peer.Classify(id)
	if err != nil {
		return peer.Principal{}, err
	}
	c, err := s.store.GetCert(ctx, ca.SerialHex(leaf))
	switch {
	case errors.Is(err, fault.NotFound):
		return peer.Principal{}, fmt.Errorf("%w: certificate %s was not issued by this control plane", fault.Unauthenticated, ca.SerialHex(leaf))
	case err != nil:
		return peer.Principal{}, fmt.Errorf("%w: certificate status unknown: %w", fault.Unavailable, err)
	case c.Revoked():
		return peer.Principal{}, fmt.Errorf("%w: certificate %s was revoked at %s", fault.Unauthenticated, c.Serial, c.RevokedAt.Format(time.RFC3339))
	case c.SPIFFEID != id.String():
		return peer.Principal{}, fmt.Errorf("%w: certificate %s does not match its record", fault.Unauthenticated, c.Serial)
	}
	if kind == audit.ActorAgent {
		a, err := s.store.GetAgent(ctx, name)
		if err != nil {
			if errors.Is(err, fault.NotFound) {
				return peer.Principal{}, fmt.Errorf("%w: agent %q is not registered", fault.Unauthenticated, name)
			}
			return peer.Principal{}, fmt.Errorf("%w: agent status unknown: %w", fault.Unavailable, err)
		}
		if a.Status != StatusActive {
			return peer.Principal{}, fmt.Errorf("%w: agent %q is %s", fault.Forbidden, name, a.Status)
		}
	}
	return peer.Principal{ID: id, Kind: kind, Name: name, Cert: leaf}, nil
}

// crlMaxAge bounds how stale a cached CRL may be, so that revocations made
// by another replica on a shared store appear within this time.
const crlMaxAge = 10 * time.Second

// CRL returns the current DER CRL of revoked, unexpired certificates.
func (s *Service) CRL(ctx context.Context) ([]byte, error) {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	now := s.clock.Now()
	if s.crl != nil && now.Sub(s.crlAt) < crlMaxAge {
		return s.crl, nil
	}
	certs, err := s.store.RevokedCerts(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", fault.Unavailable, err)
	}
	entries := make([]ca.Revoked, len(certs))
	for i, c := range certs {
		entries[i] = ca.Revoked{Serial: c.Serial, At: c.RevokedAt}
	}
	// CRL numbers must increase; time in microseconds does across restarts,
	// and the max keeps it increasing if the clock steps back.
	num := max(now.UnixMicro(), s.crlNum+1)
	der, err := s.ca.CRL(entries, num)
	if err != nil {
		return nil, err
	}
	s.crl, s.crlAt, s.crlNum = der, now, num
	return der, nil
}

func (s *Service) invalidateCRL() {
	s.crlMu.Lock()
	s.crl = nil
	s.crlMu.Unlock()
}
