package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/oauth2"
)

// GatewayOptions configures a GatewayTransport.
type GatewayOptions struct {
	// Resource is the tokens' audience: the gateway's resource URI.
	// Required.
	Resource string
	// Scopes to request; empty means all the agent may have.
	Scopes []string
	// Task, if set, is the task the tokens are for; SetTask changes it.
	Task string
	// GatewayName pins the gateway to spiffe://TD/bulkhead/gateway/NAME;
	// empty accepts any Bulkhead gateway of the agent's trust domain.
	GatewayName string
	// Configure, if set, adjusts each connection pool's transport (dial
	// and header timeouts, idle timeout).
	Configure func(*http.Transport)
	// Logger, if set, hears of switches to a rotated SVID.
	Logger *slog.Logger
}

// GatewayTransport is an http.RoundTripper for an agent calling a Bulkhead
// gateway. Every request carries an access token bound to the agent's
// current SVID and travels on a connection that presents exactly that SVID.
//
// The gateway refuses a token whose cnf names another certificate than the
// connection's, so after a rotation an old connection must not carry a new
// token, nor a new connection an old one: each SVID has its own connection
// pool (see pools), and a request's token must match its pool's SVID. Old
// connections close once their streams (an MCP session's) end.
//
// Build it on a Rotator's Client so that it follows rotation.
type GatewayTransport struct {
	c     *Client
	opts  GatewayOptions
	pools *pools

	tokens  atomic.Pointer[TokenSource]
	lastTok atomic.Pointer[boundToken]

	// mu orders ResetToken and SetTask, so that a reset never brings
	// back the task a SetTask just replaced.
	mu   sync.Mutex
	task string
}

var _ http.RoundTripper = (*GatewayTransport)(nil)

// boundToken caches the cnf of the last token seen, so that a token is
// decoded once rather than once per request.
type boundToken struct{ raw, x5t string }

// GatewayTransport returns a transport for the gateway described by opts.
func (c *Client) GatewayTransport(opts GatewayOptions) (*GatewayTransport, error) {
	if opts.Resource == "" {
		return nil, errors.New("client: the gateway's resource URI is required (the tokens' audience)")
	}
	td := c.src.ID().TrustDomain()
	if opts.GatewayName != "" {
		if _, err := spiffeid.FromPath(td, GatewayPath+opts.GatewayName); err != nil {
			return nil, fmt.Errorf("client: gateway name %q: %w", opts.GatewayName, err)
		}
	}
	t := &GatewayTransport{c: c, opts: opts, pools: &pools{src: c.src, authorize: AuthorizeGateways(td, opts.GatewayName),
		configure: opts.Configure, logger: opts.Logger, what: "gateway"}, task: opts.Task}
	t.ResetToken()
	return t, nil
}

// GatewayClient is an http.Client over GatewayTransport.
func (c *Client) GatewayClient(opts GatewayOptions) (*http.Client, error) {
	t, err := c.GatewayTransport(opts)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: t}, nil
}

// TokenError is a GatewayTransport's failure to obtain an access token
// (rather than to reach the gateway).
type TokenError struct{ Err error }

func (e *TokenError) Error() string { return "client: access token: " + e.Err.Error() }
func (e *TokenError) Unwrap() error { return e.Err }

// RoundTrip adds the token and sends the request over a connection that
// presents the certificate the token is bound to. The two are read
// separately, so a rotation between the reads shows as a mismatch and both
// are read again. A 401 from the gateway drops the cached token, so that
// the next request fetches a fresh one (after a token revocation that is
// enough).
func (t *GatewayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		g := t.pools.current()
		tok, err := t.tokens.Load().Token()
		if err != nil {
			closeBody(req)
			return nil, &TokenError{err}
		}
		if t.cnf(tok.AccessToken) == g.x5t {
			out := req.Clone(req.Context())
			out.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			resp, err := g.tr.RoundTrip(out)
			if err == nil && resp.StatusCode == http.StatusUnauthorized {
				t.ResetToken()
			}
			return resp, err
		}
		if attempt == 2 {
			closeBody(req)
			return nil, &TokenError{errors.New("the control plane issued a token bound to another certificate than the current SVID")}
		}
	}
}

// Token returns the token the next request would carry.
func (t *GatewayTransport) Token() (*oauth2.Token, error) { return t.tokens.Load().Token() }

// ResetToken drops the cached token; the next request fetches a new one.
func (t *GatewayTransport) ResetToken() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tokens.Store(t.c.TaskTokenSource(t.opts.Resource, t.task, t.opts.Scopes...))
}

// SetTask makes the tokens of requests sent from now on carry task (""
// for none: the agent's baseline). Requests already sent keep the token
// they went out with, and connections are not touched: an open stream or
// MCP session goes on, its next requests carrying the new task.
func (t *GatewayTransport) SetTask(task string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.task = task
	t.tokens.Store(t.c.TaskTokenSource(t.opts.Resource, task, t.opts.Scopes...))
}

// Task is the task the tokens of the next requests carry, or "".
func (t *GatewayTransport) Task() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.task
}

// Bare is an mTLS client for the gateway presenting the current SVID,
// without tokens: for the gateway's public metadata.
func (t *GatewayTransport) Bare() *http.Client { return &http.Client{Transport: t.pools} }

// Rotated switches to the current SVID now, closing the idle connections
// that present the previous one, rather than at the next request. Call it
// from Rotator.OnRotate.
func (t *GatewayTransport) Rotated() { t.pools.current() }

// CloseIdleConnections closes the current generation's idle connections.
func (t *GatewayTransport) CloseIdleConnections() { t.pools.CloseIdleConnections() }

// cnf is the token's cnf.x5t#S256, read without verification: the token
// came from the control plane over a verified connection, and the gateway
// verifies it.
func (t *GatewayTransport) cnf(raw string) string {
	if b := t.lastTok.Load(); b != nil && b.raw == raw {
		return b.x5t
	}
	x5t := tokenCnf(raw)
	t.lastTok.Store(&boundToken{raw: raw, x5t: x5t})
	return x5t
}

// closeBody honours the RoundTripper contract on requests not sent.
func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}
