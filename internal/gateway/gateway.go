// Package gateway is Bulkhead's policy enforcement point: agents reach MCP
// servers and HTTP APIs only through it. Every request must come over mTLS
// with the agent's SVID and carry an access token bound to that certificate;
// only callers a server names may reach it; every MCP call, resource read
// and HTTP route is authorized by the PDP with the call's arguments as
// context.input, recorded in the audit log before it is forwarded, and
// counted against budgets that do not refill; upstream credentials are
// injected here and never handed to agents; and a revocation closes the
// agent's connections at once.
package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/stdio"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// Recorder commits audit events; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Decision is one question for the PDP: may Agent do Action on Resource,
// with these arguments, for this task.
type Decision struct {
	Agent    spiffeid.ID
	Action   string
	Resource cedar.EntityUID
	Task     string
	// Manifest, Tainted and Grants are the task's live state; zero
	// without a task.
	Manifest string
	Tainted  bool
	Grants   []string
	// Input is the call's arguments as a JSON object.
	Input json.RawMessage
	// Risk is the request's risk score (0–100) and RiskReasons the
	// codes of its reasons.
	Risk        int
	RiskReasons []string
	// Attestation is what was proven about the caller's key.
	Attestation attestation.Claims
}

// Decider answers decisions: the PDP in process (PDPDecider) or the
// control plane's AuthZEN API.
type Decider interface {
	Decide(ctx context.Context, d Decision) (policy.Decision, error)
}

// PDPDecider adapts an in-process policy.Decider.
type PDPDecider struct{ PDP policy.Decider }

// Decide converts the arguments and asks the PDP.
func (p PDPDecider) Decide(ctx context.Context, d Decision) (policy.Decision, error) {
	in, err := policy.InputFromJSON(d.Input)
	if err != nil {
		return policy.Decision{}, err
	}
	return p.PDP.Decide(ctx, policy.Request{Principal: policy.Agent(d.Agent), Action: policy.Action(d.Action),
		Resource: d.Resource, Context: policy.Context{Task: d.Task, Manifest: d.Manifest, Tainted: d.Tainted, Grants: d.Grants, Input: in,
			Risk: int64(d.Risk), RiskReasons: d.RiskReasons, Attestation: d.Attestation}})
}

// Deps are the gateway's dependencies; all are required except Secrets,
// which is required when a server injects credentials, and Tasks, without
// which a request whose token names a task is refused.
type Deps struct {
	Verifier    *Verifier
	Revocations *Revocations
	Decider     Decider
	Audit       Recorder
	Secrets     SecretSource
	Tasks       TaskSource
	// Budgets spends the budget counters every gateway shares (the
	// control plane's store, directly or through its API).
	Budgets budget.Store
	// Baselines are the agents' learned baselines each call's risk is
	// scored against (the audit log, directly or through the API).
	Baselines baseline.Source
	Clock     clock.Clock
	Logger    *slog.Logger
	// AuthorizationServer is the control plane's issuer URL, advertised in
	// the protected resource metadata.
	AuthorizationServer string
	// ID is the gateway's own SPIFFE ID (spiffe://TD/bulkhead/gateway/NAME),
	// the actor of the records it makes of itself: its start, sandbox
	// violations and egress no agent owns. The control plane trusts such
	// records only from that identity.
	ID spiffeid.ID
}

// Gateway serves agents.
type Gateway struct {
	cfg      *Config
	deps     Deps
	logger   *slog.Logger
	servers  map[string]*runtime
	secrets  *secretCache
	budgets  *budgets
	sessions *sessions
	mcp      *mcpState
	tasks    *taskCache
	closers  []io.Closer
	// lookup resolves the names a sandbox's DNS stub answers.
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	risk   *baseline.Tracker
	// streams are the forwarded requests whose answers still flow, and
	// version the newest policy version a decision answered with.
	streams *streams
	version atomic.Int64
	// usage adds up what answers returned, recorded every UsageEvery.
	usage *usage
	// stop ends the gateway's own goroutines, on Close; usageDone is
	// closed once the last usage is recorded.
	stop      chan struct{}
	usageDone chan struct{}
	closeOnce sync.Once
}

type runtime struct {
	cfg    *Server
	up     upstream
	target string
}

// New builds a gateway for cfg (validated by ParseConfig or Validate).
func New(cfg *Config, deps Deps) (*Gateway, error) {
	if deps.Verifier == nil || deps.Revocations == nil || deps.Decider == nil || deps.Audit == nil || deps.Budgets == nil ||
		deps.Baselines == nil || deps.Clock == nil || deps.Logger == nil {
		return nil, errors.New("gateway: verifier, revocations, decider, audit log, budgets, baselines, clock and logger are required")
	}
	g := &Gateway{cfg: cfg, deps: deps, logger: deps.Logger, servers: map[string]*runtime{},
		secrets: &secretCache{src: deps.Secrets, clock: deps.Clock}, budgets: &budgets{clock: deps.Clock, store: deps.Budgets, scope: cfg.Resource, sensitive: cfg.Sensitive},
		sessions: newSessions(deps.Clock), mcp: newMCPState(deps.Clock), lookup: net.DefaultResolver.LookupNetIP,
		risk:    baseline.NewTracker(baseline.TrackerConfig{Source: deps.Baselines, Clock: deps.Clock, Logger: deps.Logger, AlertAt: cfg.Risk.AlertAt}),
		streams: newStreams(), usage: newUsage(), stop: make(chan struct{}), usageDone: make(chan struct{})}
	g.streams.check = g.recheck
	go g.runUsage()
	deps.Revocations.OnChange(g.changed)
	if deps.Tasks != nil {
		g.tasks = newTaskCache(deps.Tasks, deps.Clock, nil)
	}
	httpClient := clientUpstream{newHTTPUpstream(cfg.Limits)}
	for i := range cfg.Servers {
		s := &cfg.Servers[i]
		if s.Credentials != nil && deps.Secrets == nil {
			return nil, fmt.Errorf("gateway: server %q injects credentials but no secret source is configured", s.Name)
		}
		rt := &runtime{cfg: s}
		switch {
		case s.MCP != nil && s.MCP.URL != "":
			rt.up, rt.target = httpClient, s.MCP.URL
		case s.MCP != nil:
			// A stdio server: one process per agent session, with only the
			// environment the configuration gives it.
			name := s.Name
			confine, err := confinement(s.MCP, func(session string, v sandbox.Violation) { g.recordViolation(name, session, v) },
				func(session string, proxy egressConfig, l net.Listener, dns net.PacketConn) {
					g.serveEgress(name, session, proxy, l, dns)
				})
			if err != nil {
				g.Close()
				return nil, fmt.Errorf("gateway: server %q: %w", s.Name, err)
			}
			if confine == nil {
				deps.Logger.Warn("stdio server runs unconfined (sandbox: none): a compromised tool has the gateway's user, files and network", "server", s.Name)
			}
			bridge, err := stdio.New(stdio.Config{Command: s.MCP.Command, Env: s.MCP.Env, Dir: s.MCP.Dir,
				Logger: deps.Logger.With("server", s.Name), Clock: deps.Clock, Confine: confine,
				OnSessionEnd: func(id string, _ error) { g.sessions.unbind(name, id) }})
			if err != nil {
				g.Close()
				return nil, fmt.Errorf("gateway: server %q: %w", s.Name, err)
			}
			g.closers = append(g.closers, bridge)
			rt.up, rt.target = handlerUpstream{h: bridge}, "http://stdio.invalid/"+s.Name
		default:
			rt.up, rt.target = httpClient, strings.TrimRight(s.HTTP.URL, "/")
		}
		g.servers[s.Name] = rt
	}
	return g, nil
}

// Close stops stdio servers and the gateway's own goroutines.
func (g *Gateway) Close() {
	g.closeOnce.Do(func() {
		if g.stop != nil {
			close(g.stop)
		}
		if g.usageDone != nil {
			<-g.usageDone
		}
		for _, c := range g.closers {
			_ = c.Close()
		}
	})
}

// Config is the gateway's configuration.
func (g *Gateway) Config() *Config { return g.cfg }

// Handler routes /mcp/NAME and /http/NAME/... and serves the protected
// resource metadata. It routes on the path as the agent sent it (escaped),
// not through http.ServeMux, which would clean ".." and "//" and answer
// with a redirect: such paths reach serveHTTP, which refuses and records
// them.
func (g *Gateway) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		if p == "/.well-known/oauth-protected-resource" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			g.resourceMetadata(w, r)
			return
		}
		if g.serveServerMetadata(w, r) {
			return
		}
		r = g.withServerAudience(r)
		if name, ok := strings.CutPrefix(p, "/mcp/"); ok {
			g.guard(w, r, name, func(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime) { g.serveMCP(w, r, c, rt) })
			return
		}
		if rest, ok := strings.CutPrefix(p, "/http/"); ok {
			name, tail, _ := strings.Cut(rest, "/")
			g.guard(w, r, name, func(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime) {
				g.serveHTTP(w, r, c, rt, "/"+tail)
			})
			return
		}
		g.fail(w, r, fmt.Errorf("%w: no such server: paths are /mcp/NAME and /http/NAME/...", fault.NotFound))
	})
}

// resourceMetadata is RFC 9728 protected resource metadata.
func (g *Gateway) resourceMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"resource":                                   g.cfg.Resource,
		"authorization_servers":                      []string{g.deps.AuthorizationServer},
		"bearer_methods_supported":                   []string{"header"},
		"tls_client_certificate_bound_access_tokens": true,
		"resource_name":                              "Bulkhead gateway " + g.cfg.Name,
	})
}

// caller is an authenticated agent.
type caller struct {
	id     spiffeid.ID
	claims *token.Claims
	serial string
	// task is the state of the open task the token names; nil for none
	// (or one that ended: back to baseline).
	task *TaskState
	// carried are grants in force for this request although spent: those
	// that allowed the first round of the multi round-trip call it
	// continues.
	carried []string
	// risk is the risk of the caller's last decided request, and shape
	// the shape of its arguments.
	risk  baseline.Risk
	shape string
}

// self is the gateway as the actor of its own records: its SPIFFE ID (a
// gateway built without one, in tests, names itself).
func (g *Gateway) self() audit.Actor {
	if g.deps.ID.IsZero() {
		return audit.Actor{Kind: audit.ActorWorkload, ID: "gateway/" + g.cfg.Name}
	}
	return audit.Actor{Kind: audit.ActorWorkload, ID: g.deps.ID.String()}
}

func (c *caller) actor() audit.Actor { return audit.Actor{Kind: audit.ActorAgent, ID: c.id.String()} }

type connKey struct{}

// ConnContext stores the connection so that guard can track it for
// revocation; set it as http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ConnState forgets closed connections; set it as http.Server.ConnState.
func (g *Gateway) ConnState(c net.Conn, st http.ConnState) {
	if st == http.StateClosed || st == http.StateHijacked {
		g.deps.Revocations.Forget(c)
	}
}

// guard authenticates the caller (mTLS SVID + bound bearer token, neither
// revoked), checks the server exists and names the caller, and only then
// runs next.
func (g *Gateway) guard(w http.ResponseWriter, r *http.Request, server string, next func(http.ResponseWriter, *http.Request, *caller, *runtime)) {
	c, err := g.authenticate(r)
	if err != nil {
		g.refuseAuth(w, r, err)
		return
	}
	if conn, ok := r.Context().Value(connKey{}).(net.Conn); ok && !g.deps.Revocations.Track(conn, c.serial, c.id.String()) {
		g.refuseAuth(w, r, fmt.Errorf("%w: caller is revoked", ErrToken))
		return
	}
	rt := g.servers[server]
	if rt == nil {
		g.fail(w, r, fmt.Errorf("%w: no server %.64q on this gateway", fault.NotFound, server))
		return
	}
	if !CallerAllowed(rt.cfg.Callers, c.id.String()) {
		g.recordRefusal(r.Context(), c, "gateway.connect", policy.ToolServer(rt.cfg.Name).String(),
			fmt.Sprintf("%s is not among the callers of server %s", c.id, rt.cfg.Name), map[string]string{"server": rt.cfg.Name})
		g.fail(w, r, fmt.Errorf("%w: %s may not reach server %s", fault.Forbidden, c.id, rt.cfg.Name))
		return
	}
	if err := g.loadTask(r.Context(), c); err != nil {
		g.recordRefusal(r.Context(), c, "gateway.task", policy.ToolServer(rt.cfg.Name).String(), err.Error(), map[string]string{"server": rt.cfg.Name})
		if errors.Is(err, errTaskRefused) {
			g.fail(w, r, fmt.Errorf("%w: %w", fault.Forbidden, err))
			return
		}
		g.fail(w, r, fmt.Errorf("%w: the task's state is unavailable: %w", fault.Unavailable, err))
		return
	}
	next(w, r, c, rt)
}

var errNoToken = errors.New("no bearer token")

func (g *Gateway) authenticate(r *http.Request) (*caller, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: a client certificate (your SVID, over mutual TLS) is required", ErrToken)
	}
	leaf := r.TLS.PeerCertificates[0]
	auth := r.Header.Get("Authorization")
	scheme, raw, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return nil, errNoToken
	}
	claims, err := g.deps.Verifier.Verify(r.Context(), strings.TrimSpace(raw), leaf)
	if err != nil {
		return nil, err
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil || !strings.HasPrefix(id.Path(), "/agent/") {
		return nil, fmt.Errorf("%w: the token's subject is not an agent", ErrToken)
	}
	serial, _ := connSerial(*r.TLS)
	if err := g.deps.Revocations.Check(serial, claims); err != nil {
		if errors.Is(err, ErrNotReady) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrToken, err)
	}
	return &caller{id: id, claims: claims, serial: serial}, nil
}

// refuseAuth answers 401 with the RFC 6750/9728 challenge, and records the
// refusal when the caller presented a verified certificate.
func (g *Gateway) refuseAuth(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrNotReady) {
		g.fail(w, r, fmt.Errorf("%w: %w", fault.Unavailable, err))
		return
	}
	challenge := fmt.Sprintf(`Bearer realm="bulkhead", resource_metadata="%s"`, g.resourceMetadataURL(r))
	if !errors.Is(err, errNoToken) {
		challenge += fmt.Sprintf(`, error="invalid_token", error_description=%q`, strings.ReplaceAll(err.Error(), `"`, `'`))
	}
	w.Header().Set("WWW-Authenticate", challenge)
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) == 1 {
		ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: r.TLS.PeerCertificates[0].URIs[0].String()},
			Action: "gateway.authenticate", Target: r.URL.Path, Decision: audit.Deny, Reasons: []string{err.Error()},
			Detail: map[string]string{"gateway": g.cfg.Name}}
		if _, rerr := g.deps.Audit.Record(r.Context(), ev); rerr != nil {
			g.logger.Error("could not record a refused authentication", "err", rerr)
		}
	}
	g.fail(w, r, fmt.Errorf("%w: %w", fault.Unauthenticated, err))
}

func (g *Gateway) recordRefusal(ctx context.Context, c *caller, action, target, reason string, detail map[string]string) {
	detail["gateway"] = g.cfg.Name
	ev := audit.Event{Actor: c.actor(), Action: action, Target: target, Decision: audit.Deny, Reasons: []string{reason},
		Task: c.claims.Task, Detail: detail}
	if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
		g.logger.Error("could not record a refusal", "action", action, "err", err)
	}
}

// fail answers a refusal through the one edge that maps fault kinds to
// status and client text (httpx), as every Bulkhead surface does.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, g.logger, err)
}

// TLSConfig returns the gateway's server TLS configuration: TLS 1.3, its
// SVID from getCert, and client SVIDs verified against the trust bundle by
// verify (tls.Config.VerifyConnection). Clients without a certificate can
// still read the protected resource metadata; every other path refuses
// them.
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), verify func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: getCert, ClientAuth: tls.RequestClientCert,
		VerifyConnection: verify, NextProtos: []string{"h2", "http/1.1"}}
}

// Server returns an http.Server for the gateway with timeouts on every hop.
func (g *Gateway) Server(tlsCfg *tls.Config) *http.Server {
	return &http.Server{
		Handler:           g.Handler(),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: g.cfg.Limits.ReadHeader,
		// A slow client may not hold a request open while it trickles the
		// body in; responses (streams) are not bounded by this.
		ReadTimeout:    g.cfg.Limits.ReadHeader + 30*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 32 << 10,
		ConnContext:    ConnContext,
		ConnState:      g.ConnState,
		ErrorLog:       slog.NewLogLogger(g.logger.Handler(), slog.LevelDebug),
	}
}

// ActionStart records a gateway's start and what it serves.
const ActionStart = "gateway.start"

// Report describes what the gateway serves and how: the evidence an
// assessment reads (see api.GatewayReport).
func (g *Gateway) Report() api.GatewayReport {
	r := api.GatewayReport{Name: g.cfg.Name, Resource: g.cfg.Resource}
	for _, s := range g.cfg.Servers {
		sr := api.GatewayServerReport{Name: s.Name, Callers: s.Callers, BudgetCalls: s.Budget.Calls, BudgetBytes: s.Budget.ResponseBytes,
			RatePerSecond: s.RateLimit.PerSecond}
		switch {
		case s.HTTP != nil:
			sr.Transport = "http"
		case s.MCP != nil && len(s.MCP.Command) > 0:
			sr.Transport = "mcp-stdio"
			sr.Sandbox = "strict"
			if sb := s.MCP.Sandbox; sb != nil {
				switch {
				case sb.None:
					sr.Sandbox = "none"
				case sb.Profile != "":
					sr.Sandbox = sb.Profile
				}
				sr.Egress = sb.Egress
				for _, c := range sb.EgressCredentials {
					sr.Credentials = append(sr.Credentials, c.Secret)
				}
			}
		default:
			sr.Transport = "mcp-http"
		}
		if s.Credentials != nil {
			sr.Credentials = append(sr.Credentials, s.Credentials.Secret)
		}
		r.Servers = append(r.Servers, sr)
	}
	return r
}

// RecordStart records the gateway's start with its Report, so that the
// control plane knows what it serves from the audit log.
func (g *Gateway) RecordStart(ctx context.Context) error {
	b, err := json.Marshal(g.Report())
	if err != nil {
		return err
	}
	ev := audit.Event{Actor: g.self(), Action: ActionStart,
		Target: g.cfg.Resource, Decision: audit.Allow, Detail: map[string]string{"gateway": g.cfg.Name, "config": string(b)}}
	if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
		return fmt.Errorf("gateway: record start: %w", err)
	}
	return nil
}
