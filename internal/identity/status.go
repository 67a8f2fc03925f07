package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Revoke revokes an agent, every sub-agent below it, and all their
// certificates, and blocks renewal. The agent can enroll again only after an
// operator enables it and issues a new join token; its sub-agents are gone
// for good.
func (s *Service) Revoke(ctx context.Context, by audit.Actor, name, reason string) ([]string, error) {
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "revoked by operator"
	}
	return s.revokeTree(ctx, by, a, true, reason)
}

// RevokeDelegated revokes the sub-agents created with token jti (and their
// own sub-agents): revoking a parent's token withdraws what it delegated.
func (s *Service) RevokeDelegated(ctx context.Context, by audit.Actor, jti, reason string) ([]string, error) {
	names, err := s.store.AgentsDelegatedBy(ctx, jti)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", fault.Unavailable, err)
	}
	var serials []string
	for _, n := range names {
		a, err := s.store.GetAgent(ctx, n)
		if err != nil {
			return serials, err
		}
		got, err := s.revokeTree(ctx, by, a, true, reason)
		serials = append(serials, got...)
		if err != nil {
			return serials, err
		}
	}
	return serials, nil
}

// revokeTree records the revocation of a (and its subtree) first, then
// revokes, then records each covered agent and certificate for subscribers
// (gateways) that track them.
func (s *Service) revokeTree(ctx context.Context, by audit.Actor, a Agent, includeRoot bool, reason string) ([]string, error) {
	now := s.clock.Now()
	var agents, serials []string
	action := audit.ActionAgentRevoke
	if !includeRoot {
		action = ActionAgentRevokeSubtree
	}
	err := s.act(ctx, audit.Event{Time: now, Actor: by, Action: action, Target: a.SPIFFEID, Reasons: []string{reason}},
		func() error {
			var err error
			agents, serials, err = s.store.RevokeTree(ctx, a.Name, includeRoot, now, reason)
			return err
		})
	// Whatever the outcome, cached authentications may be stale now.
	s.cache.clear()
	s.invalidateCRL()
	if err != nil {
		return nil, err
	}
	for _, n := range agents {
		if n == a.Name {
			continue
		}
		s.recordAfter(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionAgentRevoke, Target: s.idString(n),
			Decision: audit.Allow, Reasons: []string{reason}, Detail: map[string]string{"cascade_from": a.SPIFFEID}})
	}
	for _, sn := range serials {
		s.recordAfter(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionSVIDRevoke, Target: a.SPIFFEID,
			Decision: audit.Allow, Reasons: []string{reason}, Detail: map[string]string{"serial": sn}})
	}
	return serials, nil
}

// ActionAgentRevokeSubtree records the revocation of an agent's sub-agents
// when the agent itself is only disabled.
const ActionAgentRevokeSubtree = "agent.revoke_subtree"

// recordAfter records facts that follow an already recorded action; a
// failure is logged, since the action it describes has happened.
func (s *Service) recordAfter(ctx context.Context, ev audit.Event) {
	if _, err := s.audit.Record(ctx, ev); err != nil {
		s.logger.Error("action done but its follow-up record failed", "action", ev.Action, "target", ev.Target, "err", err)
	}
}

func (s *Service) idString(name string) string {
	id, err := s.AgentID(name)
	if err != nil {
		return name
	}
	return id.String()
}

// SetEnabled disables or enables an agent. A disabled agent cannot
// authenticate, renew or enroll; its certificates are not revoked, but its
// sub-agents are: a delegation never outlives its parent's authority.
func (s *Service) SetEnabled(ctx context.Context, by audit.Actor, name string, enabled bool) (Agent, error) {
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return Agent{}, err
	}
	action, status := audit.ActionAgentDisable, StatusDisabled
	if enabled {
		action, status = audit.ActionAgentEnable, StatusActive
		if a.Parent != "" {
			return Agent{}, fmt.Errorf("%w: a sub-agent cannot be re-enabled; the parent delegates again", fault.Invalid)
		}
	}
	now := s.clock.Now()
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: action, Target: a.SPIFFEID,
		Detail: map[string]string{"previous_status": string(a.Status)}},
		func() error { return s.store.SetAgentStatus(ctx, name, status, now) })
	s.cache.clear()
	if err != nil {
		return Agent{}, err
	}
	if !enabled {
		if _, err := s.revokeTree(ctx, by, a, false, "parent "+a.SPIFFEID+" disabled"); err != nil {
			return Agent{}, err
		}
	}
	a.Status, a.UpdatedAt = status, now
	return a, nil
}

// authCacheTTL bounds how long a positive check is trusted. Revocations
// made by this process clear the cache at once; the TTL bounds the delay
// for revocations made by another replica on a shared store.
const authCacheTTL = time.Second

// authCache remembers recent positive checks, so that a busy endpoint (the
// token service) does not read the store on every request.
type authCache struct {
	mu     sync.Mutex
	certs  map[string]cachedCert
	agents map[string]cachedAgent
}

type cachedCert struct {
	cert Cert
	at   time.Time
}

type cachedAgent struct {
	agent Agent
	at    time.Time
}

func (c *authCache) clear() {
	c.mu.Lock()
	c.certs, c.agents = nil, nil
	c.mu.Unlock()
}

// cert returns the stored record of serial, cached.
func (s *Service) cert(ctx context.Context, serial string) (Cert, error) {
	now := s.clock.Now()
	s.cache.mu.Lock()
	e, ok := s.cache.certs[serial]
	s.cache.mu.Unlock()
	if ok && now.Sub(e.at) < authCacheTTL && now.Sub(e.at) >= 0 {
		return e.cert, nil
	}
	c, err := s.store.GetCert(ctx, serial)
	if err != nil {
		return c, err
	}
	s.cache.mu.Lock()
	if s.cache.certs == nil {
		s.cache.certs = map[string]cachedCert{}
	}
	s.cache.certs[serial] = cachedCert{cert: c, at: now}
	s.cache.mu.Unlock()
	return c, nil
}

// ActiveAgent returns agent name if it and every ancestor is active. Errors
// wrap fault.Unauthenticated (unknown), fault.Forbidden (not active) or
// fault.Unavailable (store).
func (s *Service) ActiveAgent(ctx context.Context, name string) (Agent, error) {
	a, err := s.agent(ctx, name)
	if err != nil {
		return Agent{}, err
	}
	for cur := a; ; {
		if cur.Status != StatusActive {
			if cur.Name == a.Name {
				return Agent{}, fmt.Errorf("%w: agent %q is %s", fault.Forbidden, cur.Name, cur.Status)
			}
			return Agent{}, fmt.Errorf("%w: agent %q's ancestor %q is %s", fault.Forbidden, a.Name, cur.Name, cur.Status)
		}
		if cur.Parent == "" {
			return a, nil
		}
		if cur, err = s.agent(ctx, cur.Parent); err != nil {
			return Agent{}, err
		}
	}
}

func (s *Service) agent(ctx context.Context, name string) (Agent, error) {
	now := s.clock.Now()
	s.cache.mu.Lock()
	e, ok := s.cache.agents[name]
	s.cache.mu.Unlock()
	if ok && now.Sub(e.at) < authCacheTTL && now.Sub(e.at) >= 0 {
		return e.agent, nil
	}
	a, err := s.store.GetAgent(ctx, name)
	if errors.Is(err, fault.NotFound) {
		return Agent{}, fmt.Errorf("%w: agent %q is not registered", fault.Unauthenticated, name)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("%w: agent status unknown: %w", fault.Unavailable, err)
	}
	s.cache.mu.Lock()
	if s.cache.agents == nil {
		s.cache.agents = map[string]cachedAgent{}
	}
	s.cache.agents[name] = cachedAgent{agent: a, at: now}
	s.cache.mu.Unlock()
	return a, nil
}

// Authenticate accepts a certificate that the TLS layer verified against the
// bundle only if Bulkhead issued it, it is not revoked, and, for an agent,
// the agent and all its ancestors are active. Any store error refuses.
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
	// The handshake checked the validity period, but a keep-alive
	// connection can outlive its certificate: check it on every request.
	if now := s.clock.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return peer.Principal{}, fmt.Errorf("%w: certificate %s is valid from %s to %s, not now", fault.Unauthenticated,
			ca.SerialHex(leaf), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c, err := s.cert(ctx, ca.SerialHex(leaf))
	switch {
	case errors.Is(err, fault.NotFound):
		return peer.Principal{}, fmt.Errorf("%w: certificate %s was not issued by this control plane", fault.Unauthenticated, ca.SerialHex(leaf))
	case err != nil:
		return peer.Principal{}, fmt.Errorf("%w: certificate status unknown: %w", fault.Unavailable, err)
	case c.Revoked():
		return peer.Principal{}, fmt.Errorf("%w: certificate %s was revoked at %s", fault.Unauthenticated, c.Serial, c.RevokedAt.Format(time.RFC3339))
	case c.SPIFFEID != id.String() || string(c.DER) != string(leaf.Raw):
		return peer.Principal{}, fmt.Errorf("%w: certificate %s does not match its record", fault.Unauthenticated, c.Serial)
	}
	if kind == audit.ActorAgent {
		if _, err := s.ActiveAgent(ctx, name); err != nil {
			return peer.Principal{}, err
		}
	}
	return peer.Principal{ID: id, Kind: kind, Name: name, Cert: leaf}, nil
}

// CertStatus returns the stored record of the certificate whose cnf
// thumbprint is x5t: for token introspection.
func (s *Service) CertStatus(ctx context.Context, x5t string) (Cert, error) {
	c, err := s.store.GetCertByThumbprint(ctx, x5t)
	if err != nil && !errors.Is(err, fault.NotFound) {
		return c, fmt.Errorf("%w: %w", fault.Unavailable, err)
	}
	return c, err
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
