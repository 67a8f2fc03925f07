// Package connect is the agent sidecar behind `bulkhead connect`: it serves
// plain HTTP on a loopback address and forwards every request to a Bulkhead
// gateway over mutual TLS with the agent's SVID, adding a fresh access token
// bound to that SVID. Agents in any language, and off-the-shelf MCP clients,
// reach the gateway's paths (/mcp/NAME, /http/NAME/...) without speaking
// mTLS or OAuth, while the sidecar keeps the SVID and the token rotated.
// Its local API, under LocalPrefix, opens and completes the task its
// tokens carry and requests elevations in it.
//
// The loopback socket stands for the agent's identity: whoever can send it
// a request acts as the agent. So the sidecar listens only on loopback,
// refuses requests from web pages and DNS-rebound host names, forwards only
// to the configured gateway, and sends only its own credentials.
package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// DefaultListen is where the sidecar serves unless told otherwise.
const DefaultListen = "127.0.0.1:7070"

// Timeouts of the sidecar's hops. Streams (MCP SSE) have none once their
// headers have arrived: an idle stream is the gateway's to end.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	dialTimeout       = 10 * time.Second
	tlsTimeout        = 10 * time.Second
	// responseHeaderTimeout is longer than the gateway's default upstream
	// timeout (60s), so a slow tool gets the gateway's own, clearer answer.
	responseHeaderTimeout = 5 * time.Minute
	shutdownTimeout       = 5 * time.Second
	metadataTimeout       = 10 * time.Second
)

// Config configures a Sidecar.
type Config struct {
	// Dir is the agent's credential directory (svid.pem, svid_key.pem,
	// svid_bundle.pem); renewed SVIDs are written back to it. Required.
	Dir string
	// ServerURL is the control plane that renews the SVID and issues
	// tokens (https). Required.
	ServerURL string
	// GatewayURL is the gateway's base URL (https). Required.
	GatewayURL string
	// Listen is the loopback address to serve on; empty means
	// DefaultListen. A non-loopback address is refused.
	Listen string
	// Resource is the access tokens' audience: the gateway's configured
	// resource. Empty means GatewayURL.
	Resource string
	// GatewayName pins the gateway to spiffe://TD/bulkhead/gateway/NAME;
	// empty accepts any Bulkhead gateway of the agent's trust domain.
	GatewayName string
	// Scopes to request; empty means all the agent may have.
	Scopes []string
	// Task, if set, is a task the agent has opened (tk_...): every token
	// names it, until the local API completes it or opens another. Empty
	// means the agent's baseline.
	Task string
	// Logger is required.
	Logger *slog.Logger
	// Clock decides when the SVID is renewed; nil means the wall clock.
	Clock clock.Clock
}

// Sidecar is a running `bulkhead connect`.
type Sidecar struct {
	cfg     Config
	gateway *url.URL
	rot     *client.Rotator
	handler http.Handler
	local   http.Handler

	// gw sends requests to the gateway with the agent's current SVID and
	// a token bound to it.
	gw *client.GatewayTransport

	mu sync.Mutex
	ln net.Listener

	// taskMu orders the local API's task changes.
	taskMu sync.Mutex
}

// New checks cfg and loads the agent's credentials. Nothing listens until
// Listen or Run.
func New(cfg Config) (*Sidecar, error) {
	gw, err := cfg.check()
	if err != nil {
		return nil, err
	}
	rot, err := client.NewRotator(cfg.ServerURL, cfg.Dir, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("connect: agent credentials in %s: %w", cfg.Dir, err)
	}
	rot.Clock = cfg.Clock
	// The transport is built on the rotator's own client, whose Source is
	// the rotating one: connections and tokens follow the SVID.
	gwt, err := rot.Client().GatewayTransport(client.GatewayOptions{Resource: cfg.Resource, Scopes: cfg.Scopes,
		Task: cfg.Task, GatewayName: cfg.GatewayName, Logger: cfg.Logger, Configure: func(tr *http.Transport) {
			tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
			tr.TLSHandshakeTimeout = tlsTimeout
			tr.ResponseHeaderTimeout = responseHeaderTimeout
			tr.ExpectContinueTimeout = time.Second
			// Connections of an old SVID close once their streams end.
			tr.IdleConnTimeout = idleTimeout
		}})
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	s := &Sidecar{cfg: cfg, gateway: gw, rot: rot, gw: gwt}
	// Switch to the new certificate as soon as it exists, so that idle
	// connections with the old one are closed now rather than at the next
	// request.
	rot.OnRotate = func(*x509svid.SVID) { gwt.Rotated() }
	s.local = s.newLocal()
	s.handler = s.newHandler()
	return s, nil
}

// check validates cfg and fills in defaults; it returns the gateway URL.
func (c *Config) check() (*url.URL, error) {
	switch {
	case c.Dir == "":
		return nil, errors.New("connect: the agent's credential directory is required")
	case c.ServerURL == "":
		return nil, errors.New("connect: the control plane URL is required (for SVID renewal and tokens)")
	case c.GatewayURL == "":
		return nil, errors.New("connect: the gateway URL is required")
	case c.Logger == nil:
		return nil, errors.New("connect: a logger is required")
	}
	gw, err := url.Parse(strings.TrimRight(c.GatewayURL, "/"))
	if err != nil || gw.Host == "" || !gw.IsAbs() {
		return nil, fmt.Errorf("connect: gateway URL %q is not an absolute URL", c.GatewayURL)
	}
	if gw.Scheme != "https" {
		return nil, fmt.Errorf("connect: gateway URL %q must use https (the sidecar speaks mutual TLS to it)", c.GatewayURL)
	}
	if gw.User != nil || gw.RawQuery != "" || gw.Fragment != "" {
		return nil, fmt.Errorf("connect: gateway URL %q must not carry user info, a query or a fragment", c.GatewayURL)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if err := checkListen(c.Listen); err != nil {
		return nil, err
	}
	if c.Resource == "" {
		c.Resource = gw.String()
	}
	if c.Task != "" {
		if err := elevation.ValidateTaskID(c.Task); err != nil {
			return nil, fmt.Errorf("connect: task: %w", err)
		}
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return gw, nil
}

// checkListen refuses an address that is not loopback. The sidecar lends
// the agent's identity to whoever can reach its socket; on a network
// interface that would be anyone who can route to the host.
func checkListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("connect: listen address %q: %w", addr, err)
	}
	if !httpx.LoopbackHost(host) {
		return fmt.Errorf("connect: refusing to listen on %q: the sidecar acts as the agent for whoever reaches it, so it serves only on loopback (127.0.0.1, [::1] or localhost)", addr)
	}
	return nil
}

// ID is the agent's SPIFFE ID.
func (s *Sidecar) ID() spiffeid.ID { return s.rot.Source().ID() }

// Handler is the sidecar's HTTP handler (for tests; Run serves it).
func (s *Sidecar) Handler() http.Handler { return s.handler }

// Addr is the address the sidecar listens on, once Listen has run.
func (s *Sidecar) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the sidecar's base URL, once Listen has run.
func (s *Sidecar) URL() string { return "http://" + s.Addr() }

// Listen checks that the agent can obtain a token and that the gateway
// serves the configured resource, then binds the loopback address. A
// misconfiguration fails here rather than on every request.
func (s *Sidecar) Listen(ctx context.Context) error {
	s.mu.Lock()
	bound := s.ln != nil
	s.mu.Unlock()
	if bound {
		return nil
	}
	if _, err := s.gw.Token(); err != nil {
		if task := s.gw.Task(); task != "" {
			return fmt.Errorf("connect: cannot obtain an access token for %s in task %s: %w", s.cfg.Resource, task, err)
		}
		return fmt.Errorf("connect: cannot obtain an access token for %s: %w", s.cfg.Resource, err)
	}
	if err := s.checkGateway(ctx); err != nil {
		return err
	}
	ln, err := httpx.ListenLoopback(s.cfg.Listen, "the sidecar acts as the agent for whoever reaches it")
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	return nil
}

// checkGateway reads the gateway's protected resource metadata (RFC 9728)
// over mTLS. A gateway that is not up yet is only a warning; one that
// serves another resource is an error, since every token would be refused.
func (s *Sidecar) checkGateway(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	u := s.gateway.JoinPath("/.well-known/oauth-protected-resource").String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	resp, err := s.gw.Bare().Do(req)
	if err != nil {
		s.cfg.Logger.Warn("gateway not reachable yet; requests will fail until it is", "gateway", s.cfg.GatewayURL, "err", err)
		return nil
	}
	defer resp.Body.Close()
	var md struct {
		Resource string `json:"resource"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&md) != nil || md.Resource == "" {
		s.cfg.Logger.Warn("gateway metadata unreadable; not checking the resource", "gateway", s.cfg.GatewayURL, "status", resp.StatusCode)
		return nil
	}
	if strings.TrimRight(md.Resource, "/") != strings.TrimRight(s.cfg.Resource, "/") {
		return fmt.Errorf("connect: the gateway at %s is resource %q, but tokens would be for %q; request tokens for the gateway's resource (--resource %s)",
			s.cfg.GatewayURL, md.Resource, s.cfg.Resource, md.Resource)
	}
	return nil
}

// Run serves until ctx ends (then it returns nil) or a component fails:
// the loopback server and the SVID rotator run together and stop together.
// A renewal the control plane refuses (the agent was revoked or disabled)
// stops the sidecar with that error, because no request can succeed after
// it.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.Listen(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		// Requests, streams included, end with the sidecar.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 2)
	go func() {
		if err := s.rot.Run(ctx); err != nil {
			errc <- fmt.Errorf("connect: %w", err)
			return
		}
		errc <- nil
	}()
	go func() {
		if err := srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("connect: serve: %w", err)
			return
		}
		errc <- nil
	}()
	pending := 2
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		_ = srv.Close()
	}
	for ; pending > 0; pending-- {
		if e := <-errc; err == nil {
			err = e
		}
	}
	s.gw.CloseIdleConnections()
	return err
}
