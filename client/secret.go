package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
)

// SetSecret stores value as a new version of secret name (operators). The
// server never returns it again to an operator; only gateways read it.
func (c *Client) SetSecret(ctx context.Context, name string, value []byte) (api.Secret, error) {
	var s api.Secret
	return s, c.do(ctx, http.MethodPut, "/v1/secrets/"+url.PathEscape(name), api.SetSecretRequest{Value: value}, &s)
}

// ListSecrets lists secrets without their values (operators).
func (c *Client) ListSecrets(ctx context.Context) ([]api.Secret, error) {
	var out []api.Secret
	return out, c.do(ctx, http.MethodGet, "/v1/secrets", nil, &out)
}

// DeleteSecret deletes a secret (operators).
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(name), nil, nil)
}

// RevealSecret returns a secret's current value and version; only a
// gateway's credential may call it. The caller must keep the value out of
// logs and errors.
func (c *Client) RevealSecret(ctx context.Context, name string) (api.SecretValue, error) {
	var v api.SecretValue
	return v, c.do(ctx, http.MethodGet, "/v1/secrets/"+url.PathEscape(name)+"/value", nil, &v)
}

// IssueComponentSVID obtains, with this (operator) client, the SVID of
// Bulkhead component spiffe://TD/bulkhead/KIND/NAME (kind "gateway") and
// writes svid.pem, svid_key.pem (0600) and svid_bundle.pem to dir. The key
// is generated here and sent nowhere; the answer is verified against this
// client's own trust bundle before anything is written. The component then
// renews the SVID itself (Client.Renew, or a Rotator on dir).
func (c *Client) IssueComponentSVID(ctx context.Context, kind, name, dir string) (*x509svid.SVID, error) {
	td := c.src.ID().TrustDomain()
	want, err := spiffeid.FromSegments(td, "bulkhead", kind, name)
	if err != nil {
		return nil, fmt.Errorf("client: component %s/%s: %w", kind, name, err)
	}
	key, csrPEM, err := newKeyAndCSR(want)
	if err != nil {
		return nil, err
	}
	var resp api.SVID
	path := "/v1/components/" + url.PathEscape(kind) + "/" + url.PathEscape(name) + "/svid"
	if err := c.do(ctx, http.MethodPost, path, api.ComponentSVIDRequest{CSR: string(csrPEM)}, &resp); err != nil {
		return nil, err
	}
	bundle, err := c.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("client: trust bundle: %w", err)
	}
	return acceptSVID(resp, key, bundle, want, dir)
}

// ComponentJoinToken makes a one-time enrollment token for component
// KIND/NAME (a gateway): the component enrolls with Enroll on its own
// machine, where its key is generated. ttl zero means the server's default.
func (c *Client) ComponentJoinToken(ctx context.Context, kind, name string, ttl time.Duration) (api.JoinToken, error) {
	req := api.JoinTokenRequest{}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var t api.JoinToken
	return t, c.do(ctx, http.MethodPost, "/v1/components/"+url.PathEscape(kind)+"/"+url.PathEscape(name)+"/join-token", req, &t)
}

// RevokeComponent revokes every certificate of component KIND/NAME (e.g. a
// gateway whose key may be stolen).
func (c *Client) RevokeComponent(ctx context.Context, kind, name, reason string) (api.RevokeResult, error) {
	var r api.RevokeResult
	return r, c.do(ctx, http.MethodPost, "/v1/components/"+url.PathEscape(kind)+"/"+url.PathEscape(name)+"/revoke", api.RevokeRequest{Reason: reason}, &r)
}
