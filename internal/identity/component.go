package identity

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
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
	ev := audit.Event{Actor: by, Action: audit.ActionSVIDIssue,
		Digests: map[string]string{"csr": audit.Digest(csrPEM)}, Detail: map[string]string{"via": "operator"}}
	id, err := s.ComponentID(kind, name)
	if err != nil {
		return Issued{}, err
	}
	ev.Target = id.String()
	if by.Kind != audit.ActorOperator {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: only operators issue component SVIDs", fault.Forbidden))
	}
	if ttl == 0 {
		ttl = DefaultComponentTTL
	}
	if ttl < MinSVIDTTL || ttl > MaxComponentTTL {
		return Issued{}, fmt.Errorf("%w: component SVID TTL %s is outside [%s, %s]", fault.Invalid, ttl, MinSVIDTTL, MaxComponentTTL)
	}
	csr, err := s.checkCSR(ctx, ev, id, csrPEM, nil)
	if err != nil {
		return Issued{}, err
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: id, PublicKey: csr.PublicKey, TTL: ttl}, "", "")
}

// ComponentRoutes registers POST /v1/components/{kind}/{name}/svid
// (operators only) on mux.
func (s *Service) ComponentRoutes(mux *http.ServeMux, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	mux.Handle("POST /v1/components/{kind}/{name}/svid",
		s.Guard(logger).Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(h.issueComponent)))
}

func (h handlers) issueComponent(w http.ResponseWriter, r *http.Request) {
	var req api.ComponentSVIDRequest
	if err := httpx.DecodeJSON(w, r, maxCSRBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		h.fail(w, r, faultf("ttl %q is not a positive duration", req.TTL))
		return
	}
	issued, err := h.s.IssueComponent(r.Context(), caller(r), r.PathValue("kind"), r.PathValue("name"), []byte(req.CSR), ttl)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, h.svid(issued))
}
