package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// KeySource returns a token signing key by kid.
type KeySource interface {
	Key(ctx context.Context, kid string) (any, bool)
}

// JWKS is the control plane's key set fetched over HTTPS and cached. An
// unknown kid triggers a refetch (at most every minRefetch), so a freshly
// rotated key is picked up without waiting for the periodic refresh.
type JWKS struct {
	URL    string
	HTTP   *http.Client
	Clock  clock.Clock
	Logger *slog.Logger

	mu      sync.RWMutex
	keys    map[string]any
	fetched time.Time
	fetchMu sync.Mutex
}

// minRefetch bounds refetches caused by unknown kids (a flood of forged
// tokens must not become a flood of JWKS requests).
const minRefetch = 5 * time.Second

// Key returns the key for kid.
func (j *JWKS) Key(ctx context.Context, kid string) (any, bool) {
	j.mu.RLock()
	k, ok := j.keys[kid]
	fetched := j.fetched
	j.mu.RUnlock()
	if ok || j.Clock.Now().Sub(fetched) < minRefetch {
		return k, ok
	}
	if err := j.Refresh(ctx); err != nil {
		j.Logger.Warn("JWKS refresh failed", "err", err)
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	k, ok = j.keys[kid]
	return k, ok
}

// Refresh fetches the key set.
func (j *JWKS) Refresh(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.URL, nil)
	if err != nil {
		return fmt.Errorf("gateway: JWKS: %w", err)
	}
	resp, err := j.HTTP.Do(req)
	if err != nil {
		j.noteAttempt()
		return fmt.Errorf("gateway: fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if resp.StatusCode != http.StatusOK {
		j.noteAttempt()
		return fmt.Errorf("gateway: fetch JWKS: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		j.noteAttempt()
		return fmt.Errorf("gateway: decode JWKS: %w", err)
	}
	keys := map[string]any{}
	for _, k := range set.Keys {
		// Only the algorithm Bulkhead signs with, and only public keys.
		if k.Algorithm == string(jose.ES256) && k.IsPublic() && k.KeyID != "" {
			keys[k.KeyID] = k.Key
		}
	}
	j.mu.Lock()
	j.keys, j.fetched = keys, j.Clock.Now()
	j.mu.Unlock()
	return nil
}

func (j *JWKS) noteAttempt() {
	j.mu.Lock()
	j.fetched = j.Clock.Now()
	j.mu.Unlock()
}

// Run refreshes the key set every interval until ctx ends.
func (j *JWKS) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-j.Clock.After(time.Minute):
		}
		if err := j.Refresh(ctx); err != nil {
			j.Logger.Warn("JWKS refresh failed; keeping the cached keys", "err", err)
		}
	}
}

// Verifier checks bearer tokens locally: signature by a control plane key,
// issuer, audience (Audience, or the per-server audience the request's
// context names: WithServerAudience), time, and the binding to the
// presented certificate.
// Revocation is checked separately against the live revocation state.
type Verifier struct {
	Issuer   string
	Audience string
	Keys     KeySource
	Clock    clock.Clock

	mu    sync.Mutex
	cache map[string]*token.Claims
}

// maxCachedTokens bounds the verified-token cache; a token is re-verified
// (one ECDSA verification) after it falls out.
const maxCachedTokens = 16384

// ErrToken is wrapped by every token rejection.
var ErrToken = errors.New("invalid token")

// Verify returns the claims of raw if it is a valid token for this gateway
// bound to cert.
func (v *Verifier) Verify(ctx context.Context, raw string, cert *x509.Certificate) (*token.Claims, error) {
	now := v.Clock.Now()
	v.mu.Lock()
	c, ok := v.cache[raw]
	v.mu.Unlock()
	if !ok {
		var err error
		c, err = token.Parse(raw, func(kid string) (any, bool) { return v.Keys.Key(ctx, kid) })
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrToken, err)
		}
		if c.Issuer != v.Issuer {
			return nil, fmt.Errorf("%w: issuer %q is not the control plane", ErrToken, c.Issuer)
		}
		v.remember(raw, c)
	}
	// Checked on every use, cached or not: the audience too, since a token
	// for one server's URL may be presented at another server.
	if err := v.checkAudience(ctx, c); err != nil {
		return nil, err
	}
	if err := c.CheckTime(now, 30*time.Second); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrToken, err)
	}
	if c.Cnf == nil || c.Cnf.X5TS256 != thumbprint(cert) {
		return nil, fmt.Errorf("%w: the token is bound to another certificate than the one presented", ErrToken)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != c.Subject {
		return nil, fmt.Errorf("%w: the token's subject is not the certificate's", ErrToken)
	}
	return c, nil
}

// checkAudience accepts a token for the gateway's resource, or for the
// server the request is addressed to (see WithServerAudience).
func (v *Verifier) checkAudience(ctx context.Context, c *token.Claims) error {
	if slices.Contains(c.Audience, v.Audience) {
		return nil
	}
	server := serverAudience(ctx)
	if server == "" {
		return fmt.Errorf("%w: the token is for %v, not this gateway (%s)", ErrToken, c.Audience, v.Audience)
	}
	if slices.Contains(c.Audience, server) {
		return nil
	}
	return fmt.Errorf("%w: the token is for %v, not this gateway (%s) nor this server (%s)", ErrToken, c.Audience, v.Audience, server)
}

func (v *Verifier) remember(raw string, c *token.Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cache == nil {
		v.cache = map[string]*token.Claims{}
	}
	if len(v.cache) >= maxCachedTokens {
		now := v.Clock.Now()
		for k, old := range v.cache {
			if now.After(old.Expiry.Time()) || len(v.cache) >= maxCachedTokens {
				delete(v.cache, k)
			}
		}
	}
	v.cache[raw] = c
}

func thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
