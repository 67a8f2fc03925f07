package token

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// assertionAlgorithms are the signature algorithms of the SVID key types
// the CA accepts. "none" and HMAC are absent, so a shared secret can never
// stand in for the key.
var assertionAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.EdDSA, jose.RS256, jose.PS256}

// maxAssertionLife bounds how far in the future a client assertion may
// expire, which bounds how long its jti must be remembered.
const maxAssertionLife = 5 * time.Minute

type assertionClaims struct {
	Issuer   string           `json:"iss"`
	Subject  string           `json:"sub"`
	Audience jwt.Audience     `json:"aud"`
	Expiry   *jwt.NumericDate `json:"exp"`
	IssuedAt *jwt.NumericDate `json:"iat,omitempty"`
	ID       string           `json:"jti"`
}

// verifyAssertion authenticates a private_key_jwt client (RFC 7523): a JWT
// signed with the SVID's key, carrying the SVID chain in x5c, addressed to
// this token endpoint, short-lived, and never seen before.
func (s *Service) verifyAssertion(ctx context.Context, raw string) (Client, error) {
	fail := func(format string, args ...any) (Client, error) {
		return Client{}, oauthErr("invalid_client", "client assertion: "+format, args...)
	}
	if len(raw) > MaxTokenLen {
		return fail("over %d bytes", MaxTokenLen)
	}
	jws, err := jose.ParseSigned(raw, assertionAlgorithms)
	if err != nil {
		return fail("%v", err)
	}
	if len(jws.Signatures) != 1 {
		return fail("want exactly one signature")
	}
	now := s.clock.Now()
	roots := x509.NewCertPool()
	for _, c := range s.bundle.X509Authorities() {
		roots.AddCert(c)
	}
	chains, err := jws.Signatures[0].Protected.Certificates(x509.VerifyOptions{Roots: roots, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fail("x5c does not hold an SVID of this trust domain: %v", err)
	}
	leaf := chains[0][0]
	if _, _, err := x509svid.Verify(chains[0], s.bundle, x509svid.WithTime(now)); err != nil {
		return fail("%v", err)
	}
	p, err := s.ids.Authenticate(ctx, leaf)
	if err != nil {
		return Client{}, fromFault(err, "invalid_client")
	}
	payload, err := jws.Verify(leaf.PublicKey)
	if err != nil {
		return fail("signature does not verify with the SVID's key")
	}
	var c assertionClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return fail("claims: %v", err)
	}
	id := p.ID.String()
	switch {
	case c.Issuer != id || c.Subject != id:
		return fail("iss and sub must both be the SVID's SPIFFE ID %s", id)
	case !slices.Contains(c.Audience, s.Issuer()+"/oauth2/token") && !slices.Contains(c.Audience, s.Issuer()):
		return fail("aud must be this token endpoint (%s/oauth2/token)", s.Issuer())
	case c.Expiry == nil || !now.Before(c.Expiry.Time()):
		return fail("expired or without exp")
	case c.Expiry.Time().After(now.Add(maxAssertionLife + leeway)):
		return fail("exp is more than %s ahead", maxAssertionLife)
	case c.ID == "" || len(c.ID) > 256:
		return fail("jti is required")
	}
	if err := s.store.UseClientAssertion(ctx, c.ID, c.Expiry.Time()); err != nil {
		if errors.Is(err, fault.Conflict) {
			return fail("jti %q was already used (replay)", c.ID)
		}
		return Client{}, fromFault(fmt.Errorf("%w: client assertion replay check: %w", fault.Unavailable, err), "invalid_client")
	}
	return Client{Principal: p, Cert: leaf, Method: "private_key_jwt"}, nil
}
