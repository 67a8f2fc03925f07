package token

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulkhead-dev/bulkhead/internal/attestation"
)

// Token type URIs (RFC 8693) and the JWT type of access tokens (RFC 9068).
const (
	TypeAccessToken        = "urn:ietf:params:oauth:token-type:access_token"
	TypeJWT                = "urn:ietf:params:oauth:token-type:jwt"
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	AssertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	jwtType                = "at+jwt"
)

// Claims is a Bulkhead access token (RFC 9068) bound to the client's
// certificate (RFC 8705).
type Claims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	ClientID  string           `json:"client_id"`
	Audience  jwt.Audience     `json:"aud"`
	Scope     string           `json:"scope,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	Expiry    *jwt.NumericDate `json:"exp"`
	ID        string           `json:"jti"`
	Cnf       *Confirmation    `json:"cnf"`
	// Act names, for a sub-agent's token, the parent, whose own Act names
	// the grandparent, and so on (RFC 8693 §4.1).
	Act *Actor `json:"act,omitempty"`
	// Delegation lists the ids of the ancestors' tokens that authorized
	// each delegation step, root first, so that revoking any of them
	// invalidates this token.
	Delegation []string `json:"bh_dlg,omitempty"`
	// Task is the task the token was issued for, if any.
	Task string `json:"task,omitempty"`
	// Attestation is what was proven about the key of the certificate the
	// token is bound to, if more than an unattested software key.
	Attestation *attestation.Claims `json:"att,omitempty"`
}

// Confirmation binds a token to a certificate.
type Confirmation struct {
	X5TS256 string `json:"x5t#S256"`
}

// Actor is one link of the act chain.
type Actor struct {
	Subject string `json:"sub"`
	Act     *Actor `json:"act,omitempty"`
}

// Scopes returns the token's scopes.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// Chain returns the act chain's subjects, nearest ancestor first.
func (c *Claims) Chain() []string {
	var out []string
	for a := c.Act; a != nil; a = a.Act {
		out = append(out, a.Subject)
	}
	return out
}

// ErrSignature marks a token that is not Bulkhead's: bad signature,
// unknown key, wrong algorithm or type.
var ErrSignature = errors.New("token: not a valid Bulkhead access token")

// algorithms accepted for access tokens: only what Bulkhead signs with, so
// "none" and HMAC can never pass.
var algorithms = []jose.SignatureAlgorithm{jose.ES256}

// MaxTokenLen bounds the tokens this package will parse.
const MaxTokenLen = 16 << 10

// Parse verifies a token's signature with keyFor and decodes its claims. It
// does not check time, issuer or revocation; see Service.Verify.
func Parse(raw string, keyFor func(kid string) (any, bool)) (*Claims, error) {
	if len(raw) > MaxTokenLen {
		return nil, fmt.Errorf("%w: token is over %d bytes", ErrSignature, MaxTokenLen)
	}
	tok, err := jwt.ParseSigned(raw, algorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature", ErrSignature)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, jwtType) && !strings.EqualFold(typ, "application/"+jwtType) {
		return nil, fmt.Errorf("%w: JWT type %q is not at+jwt", ErrSignature, typ)
	}
	key, ok := keyFor(h.KeyID)
	if !ok {
		return nil, fmt.Errorf("%w: unknown signing key %q", ErrSignature, h.KeyID)
	}
	var c Claims
	if err := tok.Claims(key, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if c.Expiry == nil || c.IssuedAt == nil || c.ID == "" || c.Subject == "" || c.Cnf == nil || c.Cnf.X5TS256 == "" {
		return nil, fmt.Errorf("%w: a required claim is missing", ErrSignature)
	}
	return &c, nil
}

// CheckTime checks exp, nbf and iat at now, allowing leeway for clock skew.
func (c *Claims) CheckTime(now time.Time, leeway time.Duration) error {
	if !now.Before(c.Expiry.Time().Add(leeway)) {
		return fmt.Errorf("token expired at %s", c.Expiry.Time().UTC().Format(time.RFC3339))
	}
	if c.NotBefore != nil && now.Add(leeway).Before(c.NotBefore.Time()) {
		return errors.New("token is not valid yet")
	}
	if now.Add(leeway).Before(c.IssuedAt.Time()) {
		return errors.New("token was issued in the future")
	}
	return nil
}

// sign serializes claims as a compact JWS with the at+jwt type.
func sign(signer jose.Signer, c *Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("token: encode claims: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	return jws.CompactSerialize()
}
