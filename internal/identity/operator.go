package identity

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Lifetimes of operator SVIDs issued by another operator. Each human holds
// their own credential, so that approvals (two-person ones above all) name
// distinct people; it is renewed with POST /v1/svid/renew.
const (
	DefaultOperatorTTL = 24 * time.Hour
	MaxOperatorTTL     = 30 * 24 * time.Hour
)

// OperatorID returns spiffe://TD/operator/NAME.
func (s *Service) OperatorID(name string) (spiffeid.ID, error) {
	if err := ValidateName(name); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(s.ca.TrustDomain(), "operator", name)
}

// IssueOperator issues the SVID of operator NAME for the key in a CSR, at
// another operator's request: how a second human gets a credential of
// their own without the CA's key, or the first human's, leaving where it
// is. ttl zero means DefaultOperatorTTL.
func (s *Service) IssueOperator(ctx context.Context, by audit.Actor, name string, csrPEM []byte, ttl time.Duration) (Issued, error) {
	id, err := s.OperatorID(name)
	if err != nil {
		return Issued{}, err
	}
	return s.issueByOperator(ctx, by, audit.ActionOperatorIssue, id, csrPEM, ttl, DefaultOperatorTTL, MaxOperatorTTL, "operator credentials")
}

// RevokeOperator revokes every certificate of operator NAME, and then
// every other credential registered with OnOperatorRevoke (the console's
// passkeys). If those cannot be revoked the call fails, so the operator
// retries: the certificates stay revoked.
func (s *Service) RevokeOperator(ctx context.Context, by audit.Actor, name, reason string) ([]string, error) {
	id, err := s.OperatorID(name)
	if err != nil {
		return nil, err
	}
	serials, err := s.revokeID(ctx, by, ActionOperatorRevoke, id, reason)
	if err != nil {
		return nil, err
	}
	if hook := s.operatorRevoked.Load(); hook != nil {
		if err := (*hook)(ctx, by, id.String(), reason); err != nil {
			return serials, fmt.Errorf("identity: revoke operator %s's other credentials: %w", name, err)
		}
	}
	return serials, nil
}

// OperatorRevoker revokes an operator's credentials kept elsewhere.
type OperatorRevoker func(ctx context.Context, by audit.Actor, operator, reason string) error

// OnOperatorRevoke registers f to run when an operator is revoked.
func (s *Service) OnOperatorRevoke(f OperatorRevoker) { s.operatorRevoked.Store(&f) }

// ActionOperatorRevoke records the revocation of an operator's
// certificates.
const ActionOperatorRevoke = "operator.revoke"

// OperatorRoutes registers POST /v1/operators/{name}/svid and
// /v1/operators/{name}/revoke (operators only) on mux.
func (s *Service) OperatorRoutes(mux *http.ServeMux, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	mux.Handle("POST /v1/operators/{name}/svid",
		s.Guard(logger).Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(h.issueOperator)))
	mux.Handle("POST /v1/operators/{name}/revoke",
		s.Guard(logger).Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(h.revokeOperator)))
}

func (h handlers) issueOperator(w http.ResponseWriter, r *http.Request) {
	h.issueWith(w, r, func(csr []byte, ttl time.Duration) (Issued, error) {
		return h.s.IssueOperator(r.Context(), caller(r), r.PathValue("name"), csr, ttl)
	})
}

func (h handlers) revokeOperator(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	h.revokeWith(w, r, "operator/"+name, func(reason string) ([]string, error) {
		return h.s.RevokeOperator(r.Context(), caller(r), name, reason)
	})
}
