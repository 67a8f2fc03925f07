package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Client calls the control plane's API over mTLS with the SVID in a Source.
type Client struct {
	// base is the first server URL: requests are built against it, and
	// failover sends them to whichever replica is preferred.
	base     *url.URL
	src      *Source
	pools    *pools
	failover *Failover
	http     *http.Client
}

// GatewayPath prefixes gateways' SPIFFE IDs.
const GatewayPath = "/bulkhead/gateway/"

// AuthorizeGateways accepts any Bulkhead gateway of td (or, with name,
// only spiffe://TD/bulkhead/gateway/NAME).
func AuthorizeGateways(td spiffeid.TrustDomain, name string) tlsconfig.Authorizer {
	if name != "" {
		return tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, GatewayPath+name))
	}
	return tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id.TrustDomain() != td || !strings.HasPrefix(id.Path(), GatewayPath) {
			return fmt.Errorf("client: %s is not a Bulkhead gateway of %s", id, td)
		}
		return nil
	})
}

// NewHTTPClient returns an mTLS HTTP client presenting src's SVID and
// accepting only a server that authorize allows (pinning by SPIFFE ID).
func NewHTTPClient(src *Source, authorize tlsconfig.Authorizer) *http.Client {
	tlsCfg := tlsconfig.MTLSClientConfig(src, src, authorize)
	tlsCfg.MinVersion = tls.VersionTLS13
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
}

// New returns a client for the control plane at serverURL that
// authenticates with src and accepts only a server presenting the control
// plane's SPIFFE ID in src's trust domain. serverURL may list the
// replicas of the control plane, separated by commas; the client fails
// over between them (see Failover).
func New(serverURL string, src *Source) (*Client, error) {
	bases, err := parseServerURLs(serverURL)
	if err != nil {
		return nil, err
	}
	// A pool per SVID: after a rotation requests present the new SVID even
	// while a stream (the event stream of a gateway) keeps an old
	// connection busy.
	p := &pools{src: src, authorize: tlsconfig.AuthorizeID(ServerID(src.ID().TrustDomain())), what: "control plane"}
	f := newFailover(bases, p)
	return &Client{base: bases[0], src: src, pools: p, failover: f, http: &http.Client{Timeout: 30 * time.Second, Transport: f}}, nil
}

// NewFromDir is New with the credential directory dir.
func NewFromDir(serverURL, dir string) (*Client, error) {
	src, err := LoadSource(dir)
	if err != nil {
		return nil, fmt.Errorf("client: load credentials: %w", err)
	}
	return New(serverURL, src)
}

func parseServerURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q is not an absolute URL", s)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("client: server URL %q must use https", s)
	}
	return u, nil
}

// HTTPClient returns the underlying mTLS HTTP client. Its transport is a
// *Failover: requests for any of Bases go to the preferred replica. Build
// URLs on Bases()[0] (or Current); a long-lived stream reuses the transport
// in a client without a timeout.
func (c *Client) HTTPClient() *http.Client { return c.http }

// Bases returns the control plane's URLs as configured; requests are built
// on the first.
func (c *Client) Bases() []string { return c.failover.Bases() }

// Current returns the URL of the replica requests go to now.
func (c *Client) Current() string { return c.failover.Current() }

// TLSConfig is a copy of the TLS configuration of the client's current
// connections: the current SVID, and only the control plane accepted.
func (c *Client) TLSConfig() *tls.Config {
	return c.pools.current().tr.TLSClientConfig.Clone()
}

// Source returns the client's credential source.
func (c *Client) Source() *Source { return c.src }

// Error is a failed API call.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// do sends a JSON request and decodes a JSON response into out (if non-nil).
func do(ctx context.Context, hc *http.Client, base *url.URL, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base.String()+path, body)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("client: read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e = api.Error{Code: "http_error", Message: strings.TrimSpace(string(b))}
		}
		return &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		if ctx.Err() != nil {
			// The caller gave up while the answer came, and what came is
			// not an answer (a server may even send an empty 200 to a
			// request whose cancellation it saw): the cancellation is the
			// error. A whole answer that arrived is kept, cancelled or not.
			return fmt.Errorf("client: %s %s: %w", method, path, ctx.Err())
		}
		return fmt.Errorf("client: decode response: %w", err)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return do(ctx, c.http, c.base, method, path, in, out)
}

// CreateAgent registers an agent that may request scopes. ttl zero means
// the server's default.
func (c *Client) CreateAgent(ctx context.Context, name string, ttl time.Duration, scopes ...string) (api.Agent, error) {
	req := api.CreateAgentRequest{Name: name, Scopes: scopes}
	if ttl > 0 {
		req.SVIDTTL = ttl.String()
	}
	var a api.Agent
	return a, c.do(ctx, http.MethodPost, "/v1/agents", req, &a)
}

// SetAgentScopes replaces the scopes an agent may request.
func (c *Client) SetAgentScopes(ctx context.Context, name string, scopes []string) (api.Agent, error) {
	if scopes == nil {
		scopes = []string{}
	}
	var a api.Agent
	return a, c.do(ctx, http.MethodPut, "/v1/agents/"+url.PathEscape(name)+"/scopes", api.SetScopesRequest{Scopes: scopes}, &a)
}

// ListAgents lists agents.
func (c *Client) ListAgents(ctx context.Context) ([]api.Agent, error) {
	var out []api.Agent
	return out, c.do(ctx, http.MethodGet, "/v1/agents", nil, &out)
}

// GetAgent shows one agent with its certificates.
func (c *Client) GetAgent(ctx context.Context, name string) (api.Agent, error) {
	var a api.Agent
	return a, c.do(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name), nil, &a)
}

// JoinToken makes a one-time enrollment token. ttl zero means the server's
// default.
func (c *Client) JoinToken(ctx context.Context, name string, ttl time.Duration) (api.JoinToken, error) {
	req := api.JoinTokenRequest{}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var t api.JoinToken
	return t, c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/join-token", req, &t)
}

// RevokeAgent revokes every certificate of an agent.
func (c *Client) RevokeAgent(ctx context.Context, name, reason string) (api.RevokeResult, error) {
	var r api.RevokeResult
	return r, c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/revoke", api.RevokeRequest{Reason: reason}, &r)
}

// SetAgentEnabled disables or enables an agent.
func (c *Client) SetAgentEnabled(ctx context.Context, name string, enabled bool) (api.Agent, error) {
	verb := "disable"
	if enabled {
		verb = "enable"
	}
	var a api.Agent
	return a, c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/"+verb, nil, &a)
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// AddResource registers an OAuth resource (audience) and the scopes it
// accepts (none: any).
func (c *Client) AddResource(ctx context.Context, uri string, scopes []string) (api.Resource, error) {
	var r api.Resource
	return r, c.do(ctx, http.MethodPost, "/v1/resources", api.Resource{URI: uri, Scopes: scopes}, &r)
}

// ListResources lists registered resources.
func (c *Client) ListResources(ctx context.Context) ([]api.Resource, error) {
	var out []api.Resource
	return out, c.do(ctx, http.MethodGet, "/v1/resources", nil, &out)
}

// RemoveResource unregisters a resource.
func (c *Client) RemoveResource(ctx context.Context, uri string) error {
	return c.do(ctx, http.MethodDelete, "/v1/resources?uri="+url.QueryEscape(uri), nil, nil)
}

// PasskeyLink asks for a one-time link that registers a passkey for the
// calling operator in the console.
func (c *Client) PasskeyLink(ctx context.Context) (api.PasskeyLink, error) {
	var l api.PasskeyLink
	return l, c.do(ctx, http.MethodPost, "/v1/operators/passkey-links", struct{}{}, &l)
}

// Passkeys lists the calling operator's console passkeys.
func (c *Client) Passkeys(ctx context.Context) ([]api.Passkey, error) {
	var out []api.Passkey
	return out, c.do(ctx, http.MethodGet, "/v1/operators/passkeys", nil, &out)
}

// RevokePasskeys revokes the calling operator's console passkeys.
func (c *Client) RevokePasskeys(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/operators/passkeys/revoke", struct{}{}, nil)
}
