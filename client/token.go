package client

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
)

// OAuth endpoint paths on the control plane.
const (
	TokenPath      = "/oauth2/token"
	RevokePath     = "/oauth2/revoke"
	IntrospectPath = "/oauth2/introspect"
	JWKSPath       = "/oauth2/jwks"
	MetadataPath   = "/.well-known/oauth-authorization-server"
)

// postForm sends an OAuth form request and decodes a JSON answer; OAuth
// errors come back as *Error with the RFC 6749 code.
func (c *Client) postForm(ctx context.Context, path string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("client: POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("client: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// OAuth endpoints answer RFC 6749 errors; the mTLS guard in front
		// of some of them answers Bulkhead's api.Error.
		var e struct {
			Code        string `json:"code"`
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(b, &e) == nil {
			switch {
			case e.Code != "":
				return &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
			case e.Error != "":
				return &Error{Status: resp.StatusCode, Code: e.Error, Message: e.Description}
			}
		}
		return &Error{Status: resp.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("client: decode response: %w", err)
	}
	return nil
}

// thumbprint is cnf.x5t#S256 of a certificate.
func thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// tokenCnf reads the cnf thumbprint of a token without verifying it (the
// token is the server's answer over a verified connection).
func tokenCnf(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Cnf struct {
			X5T string `json:"x5t#S256"`
		} `json:"cnf"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Cnf.X5T
}

// RequestToken obtains an access token for resource with client_credentials
// over mTLS. scopes may be empty for all the agent may have.
func (c *Client) RequestToken(ctx context.Context, resource string, scopes ...string) (api.TokenResponse, error) {
	return c.RequestTaskToken(ctx, resource, "", scopes...)
}

// RequestTaskToken is RequestToken for the agent's open task: the token
// carries the task, so every call made with it is decided in that task
// (its manifest, taint and grants). An empty task means none.
func (c *Client) RequestTaskToken(ctx context.Context, resource, task string, scopes ...string) (api.TokenResponse, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}}
	if task != "" {
		form.Set("task", task)
	}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	for attempt := 0; ; attempt++ {
		var resp api.TokenResponse
		if err := c.postForm(ctx, TokenPath, form, &resp); err != nil {
			return resp, err
		}
		// The token is bound to the certificate of the connection that
		// fetched it. Each SVID has its own connections, so it differs
		// from the current SVID only if a rotation happened during the
		// request: fetch once more on the new one.
		if tokenCnf(resp.AccessToken) == thumbprint(c.src.Leaf()) || attempt > 0 {
			return resp, nil
		}
	}
}

// TokenSource is an oauth2.TokenSource of certificate-bound access tokens:
// it caches a token, fetches a new one before expiry, and follows SVID
// rotation (a token bound to a previous certificate is never returned).
type TokenSource struct {
	c        *Client
	resource string
	task     string
	scopes   []string
	// Early is how long before expiry a token is replaced.
	Early time.Duration

	mu  sync.Mutex
	tok *oauth2.Token
	cnf string
	now func() time.Time
}

var _ oauth2.TokenSource = (*TokenSource)(nil)

// TokenSource returns a token source for resource.
func (c *Client) TokenSource(resource string, scopes ...string) *TokenSource {
	return &TokenSource{c: c, resource: resource, scopes: scopes, Early: 30 * time.Second, now: time.Now}
}

// TaskTokenSource returns a token source for resource whose tokens carry
// task.
func (c *Client) TaskTokenSource(resource, task string, scopes ...string) *TokenSource {
	ts := c.TokenSource(resource, scopes...)
	ts.task = task
	return ts
}

// Token returns a valid token, fetching one if needed.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok != nil && ts.now().Add(ts.Early).Before(ts.tok.Expiry) && ts.cnf == thumbprint(ts.c.src.Leaf()) {
		return ts.tok, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := ts.c.RequestTaskToken(ctx, ts.resource, ts.task, ts.scopes...)
	if err != nil {
		return nil, err
	}
	tok := (&oauth2.Token{AccessToken: resp.AccessToken, TokenType: resp.TokenType,
		Expiry: ts.now().Add(time.Duration(resp.ExpiresIn) * time.Second)}).WithExtra(map[string]any{"scope": resp.Scope})
	ts.tok, ts.cnf = tok, tokenCnf(resp.AccessToken)
	return tok, nil
}

// RevokeToken revokes a token (RFC 7009): an agent its own or its
// sub-agents', an operator any.
func (c *Client) RevokeToken(ctx context.Context, token, reason string) error {
	form := url.Values{"token": {token}}
	if reason != "" {
		form.Set("reason", reason)
	}
	return c.postForm(ctx, RevokePath, form, nil)
}

// Introspection is an RFC 7662 introspection response.
type Introspection struct {
	Active   bool     `json:"active"`
	Scope    string   `json:"scope"`
	ClientID string   `json:"client_id"`
	Sub      string   `json:"sub"`
	Aud      []string `json:"aud"`
	Exp      int64    `json:"exp"`
	JTI      string   `json:"jti"`
	Cnf      *struct {
		X5TS256 string `json:"x5t#S256"`
	} `json:"cnf"`
	Act json.RawMessage `json:"act"`
}

// Introspect asks the control plane whether a token is active (callers are
// resource servers and operators).
func (c *Client) Introspect(ctx context.Context, token string) (Introspection, error) {
	var out Introspection
	return out, c.postForm(ctx, IntrospectPath, url.Values{"token": {token}}, &out)
}

// DelegateOptions describe a sub-agent.
type DelegateOptions struct {
	// Scopes for the sub-agent, within the parent token's; empty means the
	// parent's.
	Scopes []string
	// TTL of the sub-agent's token and SVID; zero means the server's
	// default, capped by the parent token's expiry. Asking for more than
	// the parent has left is refused.
	TTL time.Duration
	// Name is the sub-agent's last path segment; empty lets the server
	// pick one.
	Name string
	// Dir, if set, receives the sub-agent's svid.pem, svid_key.pem and
	// svid_bundle.pem.
	Dir string
	// LineageSigner signs the statement that vouches for the sub-agent's
	// key (attestation.LineageStatement); nil means this client's own SVID
	// key, the only one the control plane accepts. Tests set it to forge.
	LineageSigner crypto.Signer
}

// SubAgent is a delegated identity: its own SVID (key generated here) and
// an attenuated access token.
type SubAgent struct {
	ID     spiffeid.ID
	Source *Source
	Token  api.TokenResponse
}

// Delegate creates a sub-agent by token exchange (RFC 8693): parentToken is
// the caller's current access token; the call goes over the caller's mTLS.
func (c *Client) Delegate(ctx context.Context, parentToken string, opts DelegateOptions) (*SubAgent, error) {
	key, csrPEM, err := newKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return nil, err
	}
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {parentToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"csr":                {string(csrPEM)},
	}
	if len(opts.Scopes) > 0 {
		form.Set("scope", strings.Join(opts.Scopes, " "))
	}
	if opts.TTL > 0 {
		form.Set("requested_expires_in", strconv.FormatInt(int64(opts.TTL/time.Second), 10))
	}
	if opts.Name != "" {
		form.Set("sub_agent", opts.Name)
	}
	// The parent's key vouches for the child's: if it is attested (in a
	// TPM), the sub-agent's SVID states a lineage from it.
	cur, _ := c.src.GetX509SVID()
	parentKey, ok := cur.PrivateKey.(crypto.Signer)
	if opts.LineageSigner != nil {
		parentKey, ok = opts.LineageSigner, true
	}
	if ok {
		sig, err := attestation.SignLineage(parentKey, attestation.LineageStatement{ParentSerial: ca.SerialHex(cur.Certificates[0]),
			ChildKey: key.Public(), Scope: form.Get("scope"), TTL: form.Get("requested_expires_in")})
		if err != nil {
			return nil, fmt.Errorf("client: sign the sub-agent's lineage: %w", err)
		}
		form.Set("lineage_proof", base64.RawURLEncoding.EncodeToString(sig))
	}
	var resp api.TokenResponse
	if err := c.postForm(ctx, TokenPath, form, &resp); err != nil {
		return nil, err
	}
	want, err := spiffeid.FromString(resp.SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("client: sub-agent ID: %w", err)
	}
	if !strings.HasPrefix(want.Path(), c.src.ID().Path()+"/sub/") || want.TrustDomain() != c.src.ID().TrustDomain() {
		return nil, fmt.Errorf("client: sub-agent %s is not below %s", want, c.src.ID())
	}
	bundle, err := c.src.GetX509BundleForTrustDomain(want.TrustDomain())
	if err != nil {
		return nil, err
	}
	svid, err := acceptSVID(api.SVID{CertChain: resp.SVID}, key, bundle, want, opts.Dir)
	if err != nil {
		return nil, err
	}
	resp.SVID, resp.Bundle = "", ""
	return &SubAgent{ID: want, Source: NewSource(svid, bundle), Token: resp}, nil
}

// NewSource holds a fixed SVID and bundle.
func NewSource(svid *x509svid.SVID, bundle *x509bundle.Bundle) *Source {
	return &Source{svid: svid, bundle: bundle}
}
