package identity

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// ComponentKinds are the Bulkhead components an operator may issue SVIDs
// for, as spiffe://TD/bulkhead/KIND/NAME. "server" is not one: the control
// plane issues its own serving certificate, and no operator-issued
// credential may pass as it.
var ComponentKinds = []string{"gateway"}

// Lifetimes of component SVIDs. A gateway's SVID can read upstream
// secrets, so it is short-lived and renewed (POST /v1/svid/renew) rather
// than issued for long.
const (
	DefaultComponentTTL = 24 * time.Hour
	MaxComponentTTL     = 7 * 24 * time.Hour
)

// ComponentID returns spiffe://TD/bulkhead/KIND/NAME.
func (s *Service) ComponentID(kind, name string) (spiffeid.ID, error) {
	if !slices.Contains(ComponentKinds, kind) {
		return spiffeid.ID{}, fmt.Errorf("%w: component kind %q is not one of %v", fault.Invalid, kind, ComponentKinds)
	}
	if err := ValidateName(name); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(s.ca.TrustDomain(), "bulkhead", kind, name)
}

// IssueComponent issues the SVID of component KIND/NAME for the key in a
// CSR, at an operator's request: how a gateway on another machine gets its
// first credential without the CA's key ever leaving the control plane.
// ttl zero means DefaultComponentTTL.
func (s *Service) IssueComponent(ctx context.Context, by audit.Actor, kind, name string, csrPEM []byte, ttl time.Duration) (Issued, error) {
	id, err := s.ComponentID(kind, name)
	if err != nil {
		return Issued{}, err
	}
	return s.issueByOperator(ctx, by, audit.ActionSVIDIssue, id, csrPEM, ttl, DefaultComponentTTL, MaxComponentTTL, "component SVIDs")
}

// issueByOperator issues id's SVID for the key in a CSR when an operator
// asks (components and further operators: identities that do not enroll
// with join tokens). ttl zero means defTTL; it may not exceed maxTTL.
func (s *Service) issueByOperator(ctx context.Context, by audit.Actor, action string, id spiffeid.ID, csrPEM []byte, ttl, defTTL, maxTTL time.Duration, what string) (Issued, error) {
	ev := audit.Event{Actor: by, Action: action, Target: id.String(),
		Digests: map[string]string{"csr": audit.Digest(csrPEM)}, Detail: map[string]string{"via": "operator"}}
	if by.Kind != audit.ActorOperator {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: only operators issue %s", fault.Forbidden, what))
	}
	if ttl == 0 {
		ttl = defTTL
	}
	if ttl < MinSVIDTTL || ttl > maxTTL {
		return Issued{}, fmt.Errorf("%w: TTL %s of %s is outside [%s, %s]", fault.Invalid, ttl, what, MinSVIDTTL, maxTTL)
	}
	csr, err := s.checkCSR(ctx, ev, id, csrPEM, nil)
	if err != nil {
		return Issued{}, err
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: id, PublicKey: csr.PublicKey, TTL: ttl}, "", "")
}

// ComponentRoutes registers POST /v1/components/{kind}/{name}/svid,
// .../revoke and .../join-token (operators only) on mux.
func (s *Service) ComponentRoutes(mux *http.ServeMux, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	mux.Handle("POST /v1/components/{kind}/{name}/svid",
		s.Guard(logger).Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(h.issueComponent)))
	mux.Handle("POST /v1/components/{kind}/{name}/revoke",
		s.Guard(logger).Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(h.revokeComponent)))
	mux.Handle("POST /v1/components/{kind}/{name}/join-token",
		s.Guard(logger).Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(h.componentJoinToken)))
}

// RevokeComponent revokes every certificate of component KIND/NAME: a
// gateway whose key may be stolen stops authenticating to the control plane
// at once (no secrets, no decisions, no renewal), and an operator must issue
// it a new credential.
func (s *Service) RevokeComponent(ctx context.Context, by audit.Actor, kind, name, reason string) ([]string, error) {
	id, err := s.ComponentID(kind, name)
	if err != nil {
		return nil, err
	}
	return s.revokeID(ctx, by, ActionComponentRevoke, id, reason)
}

// revokeID revokes every certificate of one SPIFFE ID (a component's or an
// operator's), recording the revocation first and each certificate after.
func (s *Service) revokeID(ctx context.Context, by audit.Actor, action string, id spiffeid.ID, reason string) ([]string, error) {
	if reason == "" {
		reason = "revoked by operator"
	}
	now := s.clock.Now()
	var serials []string
	err := s.act(ctx, audit.Event{Time: now, Actor: by, Action: action, Target: id.String(), Reasons: []string{reason}},
		func() error {
			var err error
			serials, err = s.store.RevokeCertsByID(ctx, id.String(), now, reason)
			return err
		})
	s.cache.clear()
	s.invalidateCRL()
	if err != nil {
		return nil, err
	}
	for _, sn := range serials {
		s.recordAfter(ctx, audit.Event{Time: now, Actor: by, Action: audit.ActionSVIDRevoke, Target: id.String(),
			Decision: audit.Allow, Reasons: []string{reason}, Detail: map[string]string{"serial": sn}})
	}
	return serials, nil
}

// ActionComponentRevoke records the revocation of a component's
// certificates.
const ActionComponentRevoke = "component.revoke"

func (h handlers) revokeComponent(w http.ResponseWriter, r *http.Request) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	h.revokeWith(w, r, kind+"/"+name, func(reason string) ([]string, error) {
		return h.s.RevokeComponent(r.Context(), caller(r), kind, name, reason)
	})
}

func (h handlers) issueComponent(w http.ResponseWriter, r *http.Request) {
	h.issueWith(w, r, func(csr []byte, ttl time.Duration) (Issued, error) {
		return h.s.IssueComponent(r.Context(), caller(r), r.PathValue("kind"), r.PathValue("name"), csr, ttl)
	})
}
