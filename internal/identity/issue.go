package identity

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Actions this package records beside the lifecycle actions named in
// internal/audit.
const (
	ActionAgentScopes   = "agent.scopes"
	ActionAgentDelegate = "agent.delegate"
)

// Thumbprint is the base64url SHA-256 of a certificate's DER: the value of
// cnf.x5t#S256 in a certificate-bound token (RFC 8705).
func Thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Enroll trades a join token and a CSR for the token's agent's first SVID.
func (s *Service) Enroll(ctx context.Context, token string, csrPEM []byte) (Issued, error) {
	ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAnonymous}, Action: audit.ActionSVIDIssue,
		Digests: map[string]string{"csr": audit.Digest(csrPEM)}, Detail: map[string]string{"via": "join_token"}}
	t, err := s.joinToken(ctx, &ev, token)
	if err != nil {
		return Issued{}, err
	}
	if t.Component != "" {
		return s.enrollComponent(ctx, ev, t, csrPEM)
	}
	a, id, err := s.tokenAgent(ctx, &ev, t)
	if err != nil {
		return Issued{}, err
	}
	if a.EKPin != "" {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q must enroll with its TPM", fault.Forbidden, a.Name))
	}
	csr, err := s.checkCSR(ctx, ev, id, csrPEM, nil)
	if err != nil {
		return Issued{}, err
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: id, PublicKey: csr.PublicKey, TTL: a.SVIDTTL}, a.Name, t.Hash)
}

// joinToken looks up a join token, naming it in ev.
func (s *Service) joinToken(ctx context.Context, ev *audit.Event, token string) (JoinToken, error) {
	pt, err := ParseJoinToken(token)
	if err != nil {
		return JoinToken{}, s.deny(ctx, *ev, err)
	}
	ev.Digests["join_token"] = "sha256:" + pt.Hash()
	t, err := s.store.GetJoinToken(ctx, pt.Hash())
	if errors.Is(err, fault.NotFound) {
		return JoinToken{}, s.deny(ctx, *ev, fmt.Errorf("%w: unknown join token", fault.Unauthenticated))
	}
	return t, err
}

// tokenAgent returns an agent's join token's agent, if the token is usable
// and the agent active; from here the records name the agent as actor,
// since the caller holds a real token for it.
func (s *Service) tokenAgent(ctx context.Context, ev *audit.Event, t JoinToken) (Agent, spiffeid.ID, error) {
	if t.Component != "" {
		return Agent{}, spiffeid.ID{}, s.deny(ctx, *ev, fmt.Errorf("%w: a component's join token enrolls no agent", fault.Invalid))
	}
	a, err := s.store.GetAgent(ctx, t.Agent)
	if err != nil {
		return Agent{}, spiffeid.ID{}, err
	}
	ev.Actor = audit.Actor{Kind: audit.ActorAgent, ID: a.SPIFFEID}
	ev.Target = a.SPIFFEID
	if err := s.usable(ctx, *ev, t); err != nil {
		return Agent{}, spiffeid.ID{}, err
	}
	if a.Status != StatusActive {
		return Agent{}, spiffeid.ID{}, s.deny(ctx, *ev, fmt.Errorf("%w: agent %q is %s", fault.Forbidden, a.Name, a.Status))
	}
	id, err := spiffeid.FromString(a.SPIFFEID)
	if err != nil {
		return Agent{}, spiffeid.ID{}, fmt.Errorf("identity: stored SPIFFE ID: %w", err)
	}
	return a, id, nil
}

// enrollComponent is Enroll with a component's join token: the SVID is the
// token's identity, with a component's lifetime, renewed like any other.
func (s *Service) enrollComponent(ctx context.Context, ev audit.Event, t JoinToken, csrPEM []byte) (Issued, error) {
	id, err := spiffeid.FromString(t.Component)
	if err != nil {
		return Issued{}, fmt.Errorf("identity: stored component SPIFFE ID: %w", err)
	}
	kind, _, err := peer.Classify(id)
	if err != nil {
		return Issued{}, err
	}
	ev.Actor, ev.Target = audit.Actor{Kind: kind, ID: t.Component}, t.Component
	if err := s.usable(ctx, ev, t); err != nil {
		return Issued{}, err
	}
	csr, err := s.checkCSR(ctx, ev, id, csrPEM, nil)
	if err != nil {
		return Issued{}, err
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: id, PublicKey: csr.PublicKey, TTL: DefaultComponentTTL}, "", t.Hash)
}

// usable refuses, recording it, a join token already used or expired.
func (s *Service) usable(ctx context.Context, ev audit.Event, t JoinToken) error {
	now := s.clock.Now()
	switch {
	case !t.UsedAt.IsZero():
		return s.deny(ctx, ev, fmt.Errorf("%w: join token was already used at %s", fault.Unauthenticated, t.UsedAt.Format(time.RFC3339)))
	case !now.Before(t.ExpiresAt):
		return s.deny(ctx, ev, fmt.Errorf("%w: join token expired at %s", fault.Unauthenticated, t.ExpiresAt.Format(time.RFC3339)))
	}
	return nil
}

// Renew issues a new SVID for a new key to a caller authenticated by its
// current SVID (p comes from Authenticate, so it is not revoked and its
// agent is active). Sub-agents do not renew: their lifetime is bounded by
// the delegation that created them, and the parent delegates again.
func (s *Service) Renew(ctx context.Context, p peer.Principal, csrPEM []byte) (Issued, error) {
	ev := audit.Event{Actor: p.Actor(), Action: audit.ActionSVIDRenew, Target: p.ID.String(),
		Digests: map[string]string{"csr": audit.Digest(csrPEM)},
		Detail:  map[string]string{"previous_serial": ca.SerialHex(p.Cert)}}
	ttl := p.Cert.NotAfter.Sub(p.Cert.NotBefore) - ca.Backdate
	agent := ""
	if p.Kind == audit.ActorAgent {
		a, err := s.renewingAgent(ctx, ev, p)
		if err != nil {
			return Issued{}, err
		}
		if a.EKPin != "" {
			return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q renews only with a new proof from its TPM", fault.Forbidden, a.Name))
		}
		agent, ttl = a.Name, a.SVIDTTL
	}
	csr, err := s.checkCSR(ctx, ev, p.ID, csrPEM, p.Cert.PublicKey)
	if err != nil {
		return Issued{}, err
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: p.ID, PublicKey: csr.PublicKey, TTL: ttl}, agent, "")
}

// renewingAgent returns the agent renewing with p, refusing a sub-agent.
func (s *Service) renewingAgent(ctx context.Context, ev audit.Event, p peer.Principal) (Agent, error) {
	a, err := s.store.GetAgent(ctx, p.Name)
	switch {
	case errors.Is(err, fault.NotFound):
		return Agent{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q is not registered", fault.Forbidden, p.Name))
	case err != nil:
		// The store's words are for the log, not the caller.
		return Agent{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q: %w", fault.Unavailable, p.Name, err))
	}
	if a.Parent != "" {
		return Agent{}, s.deny(ctx, ev, fmt.Errorf("%w: sub-agents do not renew; the parent delegates again", fault.Forbidden))
	}
	return a, nil
}

// checkCSR parses a CSR for id, recording a refusal. oldKey, if set, must
// differ from the CSR's key: renewal rotates the key.
func (s *Service) checkCSR(ctx context.Context, ev audit.Event, id spiffeid.ID, csrPEM []byte, oldKey crypto.PublicKey) (*x509.CertificateRequest, error) {
	csr, err := ca.ParseCSR(csrPEM, id)
	if err != nil {
		return nil, s.deny(ctx, ev, fmt.Errorf("%w: %w", fault.Invalid, err))
	}
	if oldKey != nil {
		if k, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && k.Equal(oldKey) {
			return nil, s.deny(ctx, ev, fmt.Errorf("%w: renewal must use a new key", fault.Invalid))
		}
	}
	return csr, nil
}

func (s *Service) sign(ctx context.Context, ev audit.Event, req ca.SVIDRequest, agent, redeem string) (Issued, error) {
	leaf, err := s.ca.SignSVID(req)
	if errors.Is(err, ca.ErrBadCSR) {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: %w", fault.Invalid, err))
	}
	if err != nil {
		// The CA failed (its signer, an HSM, or the randomness source):
		// not the caller's doing, and its words are for the log.
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("identity: issue SVID for %s: %w", req.ID, err))
	}
	now := s.clock.Now()
	c := Cert{Serial: ca.SerialHex(leaf), SPIFFEID: req.ID.String(), Agent: agent, NotBefore: leaf.NotBefore,
		NotAfter: leaf.NotAfter, IssuedAt: now, IssuedBy: ev.Actor.String(), DER: leaf.Raw, X5T: Thumbprint(leaf)}
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

// SubAgentRequest describes a delegation: a parent creating a sub-agent.
type SubAgentRequest struct {
	// Parent is the authenticated parent agent.
	Parent peer.Principal
	// ID is the new sub-agent's last path segment; empty picks a random one.
	ID string
	// CSR is the sub-agent's certificate request (its key stays with it).
	CSR []byte
	// Scopes the sub-agent may use; the caller has checked them against the
	// parent's current scope.
	Scopes []string
	// NotAfter bounds the sub-agent's SVID: no later than the parent's
	// token.
	NotAfter time.Time
	// JTI is the parent's access token that authorized the delegation.
	JTI string
	// MaxDepth is the deepest allowed sub-agent level.
	MaxDepth int
	// Attestation is the lineage the sub-agent's key has from its
	// parent's attested key, if any.
	Attestation attestation.Claims
}

// CreateSubAgent registers spiffe://TD/agent/PARENT/sub/ID and issues its
// SVID, valid until req.NotAfter at most. The parent must be an active
// agent, and the new agent's depth at most req.MaxDepth.
func (s *Service) CreateSubAgent(ctx context.Context, req SubAgentRequest) (Agent, Issued, error) {
	p := req.Parent
	ev := audit.Event{Actor: p.Actor(), Action: ActionAgentDelegate, Digests: map[string]string{"csr": audit.Digest(req.CSR)},
		Detail: map[string]string{"parent_jti": req.JTI, "scopes": strings.Join(req.Scopes, " ")}}
	if p.Kind != audit.ActorAgent {
		return Agent{}, Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: only agents delegate to sub-agents", fault.Forbidden))
	}
	parent, err := s.ActiveAgent(ctx, p.Name)
	if err != nil {
		return Agent{}, Issued{}, s.deny(ctx, ev, err)
	}
	childID := req.ID
	if childID == "" {
		if childID, err = randomSegment(); err != nil {
			return Agent{}, Issued{}, err
		}
	}
	if err := ValidateName(childID); err != nil {
		return Agent{}, Issued{}, s.deny(ctx, ev, err)
	}
	name := parent.Name + "/sub/" + childID
	if d := Depth(name); d > req.MaxDepth {
		return Agent{}, Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: delegation depth %d exceeds the limit of %d", fault.Forbidden, d, req.MaxDepth))
	}
	id, err := s.AgentID(name)
	if err != nil {
		return Agent{}, Issued{}, s.deny(ctx, ev, err)
	}
	ev.Target = id.String()
	now := s.clock.Now()
	ttl := req.NotAfter.Sub(now)
	if ttl < time.Second {
		return Agent{}, Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: the parent's authority expires too soon to delegate", fault.Invalid))
	}
	csr, err := s.checkCSR(ctx, ev, id, req.CSR, p.Cert.PublicKey)
	if err != nil {
		return Agent{}, Issued{}, err
	}
	child := Agent{Name: name, SPIFFEID: id.String(), Status: StatusActive, SVIDTTL: ttl, CreatedAt: now, CreatedBy: p.ID.String(),
		UpdatedAt: now, Scopes: req.Scopes, Parent: parent.Name, DelegatedJTI: req.JTI}
	err = s.act(ctx, ev, func() error { return s.store.CreateAgent(ctx, child) })
	if err != nil {
		return Agent{}, Issued{}, err
	}
	detail := map[string]string{"via": "delegation", "parent_jti": req.JTI}
	if req.Attestation != (attestation.Claims{}) {
		detail["attestation"] = req.Attestation.String()
	}
	issued, err := s.sign(ctx, audit.Event{Actor: p.Actor(), Action: audit.ActionSVIDIssue, Target: id.String(), Detail: detail},
		ca.SVIDRequest{ID: id, PublicKey: csr.PublicKey, TTL: ttl, NotAfter: req.NotAfter, Attestation: req.Attestation}, name, "")
	if err != nil {
		// A sub-agent without its certificate must not linger as active.
		if _, _, rerr := s.store.RevokeTree(ctx, name, true, s.clock.Now(), "delegation failed"); rerr != nil {
			s.logger.Error("could not retire a sub-agent whose issuance failed", "agent", name, "err", rerr)
		}
		return Agent{}, Issued{}, err
	}
	// The certificate never outlives the delegation, whatever the CA's
	// rounding.
	if issued.Leaf.NotAfter.After(req.NotAfter) {
		return Agent{}, Issued{}, fmt.Errorf("identity: sub-agent certificate outlives its delegation")
	}
	return child, issued, nil
}
