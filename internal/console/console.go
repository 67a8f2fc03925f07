// Package console is the operators' web console, served under /console/ on
// the control plane's TLS listener: server-rendered pages with a small
// script, no build step, every asset embedded.
//
// A human signs in with a WebAuthn passkey (user verification required),
// registered through a one-time link that an operator's certificate asks
// for. Sessions are sealed cookies (SameSite=Strict, Secure, HttpOnly,
// __Host- prefixed) that any replica can open, short-lived and bound to the
// passkey's operator; every state-changing request must come from the
// console's own origin and carry the session's CSRF token. The pages send a
// strict Content-Security-Policy with no inline script, and refuse to be
// framed. An agent's certificate never opens the console.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Audit actions the console records.
const (
	ActionPasskeyLink     = "console.passkey_link"
	ActionPasskeyRegister = "console.passkey_register"
	ActionSignIn          = "console.sign_in"
	ActionSignOut         = "console.sign_out"
	ActionRefused         = "console.refused"
)

// Sealer seals values bound to a label (*secretbox.Box): sessions and
// ceremonies live in sealed cookies, so any replica can read them.
type Sealer interface {
	Seal(label string, plaintext []byte) ([]byte, error)
	Open(label string, sealed []byte) ([]byte, error)
}

// Config holds the console's dependencies; all are required.
type Config struct {
	Store  Store
	Audit  audit.Recorder
	Sealer Sealer
	Clock  clock.Clock
	Logger *slog.Logger
	// Origin is the console's origin as browsers reach it
	// (https://bulkhead.example.com:8443); its host is the WebAuthn
	// relying party id, so it must be a name, not an IP address.
	Origin string
	// Guard authenticates the operator API (passkey links) over mTLS.
	Guard peer.Guard
	// Elevations are the requests humans approve here.
	Elevations Elevations
	// Agents, Policies and Evidence are what the other pages show.
	Agents   Agents
	Policies Policies
	Evidence Evidence
	Reports  Reports
}

// Session lifetimes.
const (
	SessionTTL  = 15 * time.Minute
	ceremonyTTL = 5 * time.Minute
	LinkTTL     = 24 * time.Hour
)

// Console serves the console.
type Console struct {
	cfg    Config
	wa     *webauthn.WebAuthn
	origin *url.URL
	pages  *template.Template
}

// New returns a Console.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Sealer == nil || cfg.Clock == nil || cfg.Logger == nil || cfg.Guard.Auth == nil || cfg.Elevations == nil ||
		cfg.Agents == nil || cfg.Policies == nil || cfg.Evidence.Events == nil || cfg.Evidence.Stream == nil || cfg.Evidence.Verify == nil || cfg.Reports == nil {
		return nil, errors.New("console: store, audit log, sealer, clock, logger, guard, elevations, agents, policies, evidence and reports are required")
	}
	u, err := url.Parse(cfg.Origin)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("console: origin %q is not https://HOST[:PORT]", cfg.Origin)
	}
	u.Path = ""
	wa, err := webauthn.New(&webauthn.Config{RPID: u.Hostname(), RPDisplayName: "Bulkhead", RPOrigins: []string{u.String()}})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	pages, err := template.ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	return &Console{cfg: cfg, wa: wa, origin: u, pages: pages}, nil
}

// Routes registers the console on mux.
func (c *Console) Routes(mux *http.ServeMux) {
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /console/static/", c.secure(http.StripPrefix("/console/static/", http.FileServerFS(static))))
	mux.Handle("GET /console/{$}", c.view(c.home))
	mux.Handle("GET /console/decisions", c.view(c.decisionsPage))
	mux.Handle("GET /console/api/events", c.secure(http.HandlerFunc(c.events)))
	mux.Handle("GET /console/audit", c.view(c.auditPage))
	mux.Handle("POST /console/api/audit/verify", c.secure(c.sameOrigin(c.signedIn(c.verify))))
	mux.Handle("GET /console/agents", c.view(c.agentsPage))
	mux.Handle("GET /console/agents/{name}", c.view(c.agentPage))
	mux.Handle("POST /console/api/agents/{name}", c.secure(c.sameOrigin(c.signedIn(c.agentChange))))
	mux.Handle("GET /console/policies", c.view(c.policiesPage))
	mux.Handle("GET /console/assess", c.view(c.assessPage))
	mux.Handle("GET /console/blast-radius", c.view(c.blastPage))
	mux.Handle("GET /console/login", c.secure(http.HandlerFunc(c.loginPage)))
	mux.Handle("GET /console/register", c.secure(http.HandlerFunc(c.registerPage)))
	mux.Handle("POST /console/api/register/begin", c.secure(c.sameOrigin(c.registerBegin)))
	mux.Handle("POST /console/api/register/finish", c.secure(c.sameOrigin(c.registerFinish)))
	mux.Handle("POST /console/api/login/begin", c.secure(c.sameOrigin(c.loginBegin)))
	mux.Handle("POST /console/api/login/finish", c.secure(c.sameOrigin(c.loginFinish)))
	mux.Handle("POST /console/api/logout", c.secure(c.sameOrigin(c.signedIn(c.logout))))
	mux.Handle("GET /console/approvals", c.view(c.approvalsPage))
	mux.Handle("POST /console/api/approvals/{id}/begin", c.secure(c.sameOrigin(c.signedIn(c.decideBegin))))
	mux.Handle("POST /console/api/approvals/{id}/finish", c.secure(c.sameOrigin(c.signedIn(c.decideFinish))))
	mux.Handle("POST /v1/operators/passkey-links", c.cfg.Guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(c.createLink)))
	mux.Handle("GET /v1/operators/passkeys", c.cfg.Guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(c.listPasskeys)))
	mux.Handle("POST /v1/operators/passkeys/revoke", c.cfg.Guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(c.revokeOwnPasskeys)))
}

// secure sets the headers every console response carries, and refuses an
// agent's certificate outright.
func (c *Console) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if id, ok := agentCert(r); ok {
			c.refuse(r.Context(), r, audit.Actor{Kind: audit.ActorAgent, ID: id}, "an agent's certificate cannot open the console")
			http.Error(w, "forbidden: agents cannot use the console", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// agentCert reports whether the request came with an agent's certificate.
// Whether the certificate is valid does not matter: an agent must not even
// try.
func agentCert(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}
	id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		return "", false
	}
	kind, _, err := peer.Classify(id)
	return id.String(), err == nil && kind == audit.ActorAgent
}

// sameOrigin refuses a state-changing request that does not come from the
// console's own pages: the browser's Origin header must be the console's.
func (c *Console) sameOrigin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != c.origin.String() {
			c.refuse(r.Context(), r, audit.Actor{Kind: audit.ActorAnonymous}, "cross-origin request (Origin "+fmt.Sprintf("%q", r.Header.Get("Origin"))+")")
			httpx.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden: cross-origin request"})
			return
		}
		next(w, r)
	}
}

// refuse records a refused console request.
func (c *Console) refuse(ctx context.Context, r *http.Request, who audit.Actor, why string) {
	ev := audit.Event{Time: c.cfg.Clock.Now(), Actor: who, Action: ActionRefused, Target: r.URL.Path}
	audit.Refuse(ctx, c.cfg.Audit, c.cfg.Logger, ev, errors.New(why))
}

func (c *Console) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.pages.ExecuteTemplate(w, name, data); err != nil {
		c.cfg.Logger.Error("console page", "page", name, "err", err)
	}
}

// page is what every template reads.
type page struct {
	Title    string
	Operator string
	CSRF     string
	Expires  string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, "login.html", page{Title: "Sign in"})
}

func (c *Console) registerPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, "register.html", page{Title: "Register a passkey"})
}

// home is the signed-in overview.
func (c *Console) home(w http.ResponseWriter, r *http.Request, p page) {
	p.Title = "Overview"
	c.render(w, "home.html", p)
}
