// Package peer identifies the caller of a request by the X.509-SVID it
// presented over mutual TLS, and authorizes it by a rule.
//
// The TLS handshake verifies the chain against the trust bundle (once per
// connection); each request then asks an Authenticator whether that
// certificate is still good (not revoked, its agent not disabled), so a
// revocation takes effect on connections that are already open.
package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// Principal is an authenticated caller.
type Principal struct {
	ID   spiffeid.ID
	Kind audit.ActorKind
	// Name is the agent's name (path below /agent/), the operator's name
	// (below /operator/) or the component's (below /bulkhead/).
	Name string
	Cert *x509.Certificate
}

// Actor returns the principal as an audit actor.
func (p Principal) Actor() audit.Actor { return audit.Actor{Kind: p.Kind, ID: p.ID.String()} }

// Path prefixes that give a SPIFFE ID its kind. Agents and humans live in
// separate namespaces so that no agent certificate can ever pass as an
// operator's.
const (
	AgentPrefix     = "/agent/"
	OperatorPrefix  = "/operator/"
	ComponentPrefix = "/bulkhead/"
)

// Classify returns the kind and name of a SPIFFE ID.
func Classify(id spiffeid.ID) (audit.ActorKind, string, error) {
	p := id.Path()
	for _, c := range []struct {
		prefix string
		kind   audit.ActorKind
	}{{AgentPrefix, audit.ActorAgent}, {OperatorPrefix, audit.ActorOperator}, {ComponentPrefix, audit.ActorWorkload}} {
		if name, ok := strings.CutPrefix(p, c.prefix); ok && name != "" {
			return c.kind, name, nil
		}
	}
	return "", "", fmt.Errorf("%w: SPIFFE ID %s is not an agent, operator or Bulkhead component", fault.Forbidden, id)
}

// Authenticator decides whether a verified certificate may still act.
type Authenticator interface {
	Authenticate(ctx context.Context, leaf *x509.Certificate) (Principal, error)
}

// Rule authorizes a principal; nil means allowed.
type Rule func(Principal) error

// Kinds allows principals of the given kinds.
func Kinds(kinds ...audit.ActorKind) Rule {
	return func(p Principal) error {
		for _, k := range kinds {
			if p.Kind == k {
				return nil
			}
		}
		return fmt.Errorf("%w: %s may not call this endpoint", fault.Forbidden, p.ID)
	}
}

type ctxKey struct{}

// FromContext returns the principal stored by Require.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// Recorder records refusals; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Guard authenticates and authorizes callers of an API and records every
// refusal of a caller that presented a verified certificate, so that an
// attempt by a known (perhaps compromised) identity to reach what it may not
// is evidence, not just a log line.
type Guard struct {
	Auth   Authenticator // required
	Audit  Recorder      // required
	Logger *slog.Logger  // required
}

// Require wraps next so that it runs only for a caller that presented a
// verified SVID, that the authenticator still accepts, and that rule allows.
// A Guard with a missing dependency refuses everything: there is no way to
// build an open endpoint with Require.
func (g Guard) Require(rule Rule, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger := g.Logger
		if logger == nil {
			logger = slog.Default()
		}
		if g.Auth == nil || g.Audit == nil || g.Logger == nil || rule == nil {
			httpx.WriteError(w, r, logger, fmt.Errorf("%w: endpoint guard is misconfigured", fault.Unavailable))
			return
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			httpx.WriteError(w, r, logger, fmt.Errorf("%w: this endpoint requires a client certificate (mutual TLS with an SVID)", fault.Unauthenticated))
			return
		}
		leaf := r.TLS.PeerCertificates[0]
		p, err := g.Auth.Authenticate(r.Context(), leaf)
		if err == nil {
			err = rule(p)
		}
		if err != nil {
			g.recordRefusal(r, leaf, err)
			httpx.WriteError(w, r, logger, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

func (g Guard) recordRefusal(r *http.Request, leaf *x509.Certificate, why error) {
	actor := audit.Actor{Kind: audit.ActorAnonymous}
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		actor.ID = id.String()
		if kind, _, err := Classify(id); err == nil {
			actor.Kind = kind
		}
	}
	ev := audit.Event{Actor: actor, Action: audit.ActionAPIAccess, Target: r.Method + " " + r.URL.Path,
		Decision: audit.Deny, Reasons: []string{why.Error()},
		Detail: map[string]string{"serial": hex.EncodeToString(leaf.SerialNumber.Bytes())}}
	if _, err := g.Audit.Record(r.Context(), ev); err != nil {
		g.Logger.Error("could not record a refused request", "actor", actor, "err", err)
	}
}

// VerifyConnection returns a tls.Config.VerifyConnection hook for servers
// whose clients may or may not present a certificate: a presented chain must
// be an X.509-SVID that verifies against bundle at clk's time; no chain is
// allowed through to the handler, which decides (Require refuses it).
func VerifyConnection(bundle x509bundle.Source, clk clock.Clock) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		if _, _, err := x509svid.Verify(cs.PeerCertificates, bundle, x509svid.WithTime(clk.Now())); err != nil {
			return fmt.Errorf("peer: client certificate rejected: %w", err)
		}
		return nil
	}
}
