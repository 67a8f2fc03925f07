package token

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

func newJTI() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Introspection is an RFC 7662 response.
type Introspection struct {
	Active    bool          `json:"active"`
	Scope     string        `json:"scope,omitempty"`
	ClientID  string        `json:"client_id,omitempty"`
	TokenType string        `json:"token_type,omitempty"`
	Exp       int64         `json:"exp,omitempty"`
	Iat       int64         `json:"iat,omitempty"`
	Nbf       int64         `json:"nbf,omitempty"`
	Sub       string        `json:"sub,omitempty"`
	Aud       []string      `json:"aud,omitempty"`
	Iss       string        `json:"iss,omitempty"`
	JTI       string        `json:"jti,omitempty"`
	Cnf       *Confirmation `json:"cnf,omitempty"`
	Act       *Actor        `json:"act,omitempty"`
	Task      string        `json:"task,omitempty"`
}

// Introspect reports whether a token is active now (RFC 7662). Any token
// that fails any check, including when a dependency cannot be asked, is
// inactive.
func (s *Service) Introspect(ctx context.Context, raw string) Introspection {
	c, err := s.Verify(ctx, raw)
	if err != nil {
		s.logger.Debug("introspection: inactive token", "reason", err)
		return Introspection{Active: false}
	}
	return Introspection{Active: true, Scope: c.Scope, ClientID: c.ClientID, TokenType: "Bearer",
		Exp: c.Expiry.Time().Unix(), Iat: c.IssuedAt.Time().Unix(), Sub: c.Subject, Aud: c.Audience,
		Iss: c.Issuer, JTI: c.ID, Cnf: c.Cnf, Act: c.Act, Task: c.Task, Nbf: nbf(c)}
}

func nbf(c *Claims) int64 {
	if c.NotBefore == nil {
		return 0
	}
	return c.NotBefore.Time().Unix()
}

// Revoke revokes a token (RFC 7009) for by. Operators may revoke any token;
// an agent may revoke its own and its sub-agents'. Sub-agents created with
// the token are revoked too. A token that is not Bulkhead's is ignored, as
// RFC 7009 asks.
func (s *Service) Revoke(ctx context.Context, by peer.Principal, raw, reason string) error {
	now := s.clock.Now()
	c, err := Parse(raw, s.keys.verifier(now))
	if err != nil {
		return nil
	}
	allowed := by.Kind == audit.ActorOperator
	if by.Kind == audit.ActorAgent {
		self := by.ID.String()
		allowed = c.Subject == self || slices.Contains(c.Chain(), self)
	}
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionTokenRevoke, Target: c.Subject,
		Detail: map[string]string{"jti": c.ID}}
	if !allowed {
		ev.Decision, ev.Reasons = audit.Deny, []string{"not the token's subject, an ancestor, or an operator"}
		s.recordAfter(ctx, ev)
		return oauthErr("unauthorized_client", "%s may not revoke a token of %s", by.ID, c.Subject)
	}
	if reason == "" {
		reason = "revoked by " + by.ID.String()
	}
	ev.Decision, ev.Reasons = audit.Allow, []string{reason}
	if _, err := s.audit.Record(ctx, ev); err != nil {
		return oauthErr("temporarily_unavailable", "not revoked: the audit log is unavailable")
	}
	if err := s.store.RevokeToken(ctx, Revoked{JTI: c.ID, RevokedAt: now, ExpiresAt: c.Expiry.Time(),
		RevokedBy: by.ID.String(), Reason: reason}); err != nil {
		return fmt.Errorf("%w: %w", fault.Unavailable, err)
	}
	if _, err := s.ids.RevokeDelegated(ctx, by.Actor(), c.ID, "parent token revoked: "+reason); err != nil {
		return fmt.Errorf("token: revoke sub-agents of %s: %w", c.ID, err)
	}
	return nil
}

func (s *Service) recordAfter(ctx context.Context, ev audit.Event) {
	if _, err := s.audit.Record(ctx, ev); err != nil {
		s.logger.Error("could not record", "action", ev.Action, "err", err)
	}
}

// AddResource registers a resource (audience) and the scopes it accepts.
func (s *Service) AddResource(ctx context.Context, by audit.Actor, uri string, scopes []string) (Resource, error) {
	if err := checkResourceURI(uri); err != nil {
		return Resource{}, err
	}
	if err := identity.ValidateScopes(scopes); err != nil {
		return Resource{}, err
	}
	now := s.clock.Now()
	r := Resource{URI: uri, Scopes: scopes, CreatedAt: now, CreatedBy: by.ID}
	if _, err := s.audit.Record(ctx, audit.Event{Time: now, Actor: by, Action: ActionResourceAdd, Target: uri, Decision: audit.Allow,
		Detail: map[string]string{"scopes": strings.Join(scopes, " ")}}); err != nil {
		return Resource{}, fmt.Errorf("%w: not added: the audit log is unavailable", fault.Unavailable)
	}
	if err := s.store.CreateResource(ctx, r); err != nil {
		return Resource{}, err
	}
	s.forgetResources(uri)
	return r, nil
}

// RemoveResource unregisters a resource; tokens already issued for it stay
// valid until they expire.
func (s *Service) RemoveResource(ctx context.Context, by audit.Actor, uri string) error {
	if _, err := s.store.GetResource(ctx, uri); err != nil {
		return err
	}
	if _, err := s.audit.Record(ctx, audit.Event{Actor: by, Action: ActionResourceDel, Target: uri, Decision: audit.Allow}); err != nil {
		return fmt.Errorf("%w: not removed: the audit log is unavailable", fault.Unavailable)
	}
	err := s.store.DeleteResource(ctx, uri)
	s.forgetResources(uri)
	return err
}

// ListResources lists registered resources.
func (s *Service) ListResources(ctx context.Context) ([]Resource, error) {
	return s.store.ListResources(ctx)
}

func checkResourceURI(uri string) error {
	// RFC 8707: an absolute URI without a fragment.
	i := strings.Index(uri, ":")
	if i < 1 || len(uri) > maxResourceLen || strings.ContainsAny(uri, "# \t\n") {
		return fmt.Errorf("%w: resource %q must be an absolute URI without a fragment", fault.Invalid, uri)
	}
	return nil
}

// errAssertion wraps private_key_jwt failures.
var errAssertion = errors.New("client assertion rejected")
