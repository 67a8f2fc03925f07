package token

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

// StoredKey is a signing key as the store keeps it: the private key sealed
// with the control plane's master key.
type StoredKey struct {
	KID           string
	Alg           string
	PrivateSealed []byte
	PublicJWK     string
	CreatedAt     time.Time
	// ActiveAt is when the key starts signing; it is published from
	// CreatedAt, ahead of use, so verifiers' caches have it before they
	// meet a token it signed.
	ActiveAt time.Time
}

// KeyStore persists signing keys.
type KeyStore interface {
	TokenKeys(ctx context.Context) ([]StoredKey, error)
	// InsertTokenKey fails with fault.Conflict if a key already holds
	// ActiveAt, which is how replicas agree on one key per slot.
	InsertTokenKey(ctx context.Context, k StoredKey) error
}

type signingKey struct {
	StoredKey
	pub    *ecdsa.PublicKey
	signer jose.Signer
}

// HardwareKeys makes and finds keys inside a PKCS#11 token
// (*ca.PKCS11KeyStore): with it, signing keys are generated in the token
// and never leave it; the store keeps a reference to each, not the key.
type HardwareKeys interface {
	Generate(name string) (crypto.Signer, error)
	// SignerFor finds the token's key with this public key: the stored
	// public key names the key, so a token holding another key of the
	// same label cannot stand in for it.
	SignerFor(pub crypto.PublicKey) (crypto.Signer, error)
}

// inToken marks a sealed "key" that is a reference to a token's key.
const inToken = "pkcs11:"

// keyset is the in-memory view of the signing keys. Keys rotate every
// period; a new key is created (and published) lead before it becomes
// active; a replaced key stays published until every token it signed has
// expired (maxTTL after its successor took over).
type keyset struct {
	store  KeyStore
	box    *secretbox.Box
	hw     HardwareKeys // nil: keys are sealed in the store
	period time.Duration
	lead   time.Duration
	maxTTL time.Duration

	mu   sync.RWMutex
	keys []*signingKey // by ActiveAt
}

// sealName binds a sealed key to its kid.
func sealName(kid string) string { return "token-key/" + kid }

// refresh reloads keys from the store and creates the current or next key
// when due. Run by every replica; the store's unique ActiveAt keeps them to
// one key per slot.
func (k *keyset) refresh(ctx context.Context, now time.Time) error {
	if err := k.load(ctx); err != nil {
		return err
	}
	k.mu.RLock()
	var newest *signingKey
	if n := len(k.keys); n > 0 {
		newest = k.keys[n-1]
	}
	k.mu.RUnlock()
	var due time.Time
	switch {
	case newest == nil:
		due = now
	case !newest.ActiveAt.After(now) && !now.Before(newest.ActiveAt.Add(k.period-k.lead)):
		// The newest key is in use and its successor must be published now.
		due = newest.ActiveAt.Add(k.period)
		if due.Before(now) { // the control plane was down for a while
			due = now
		}
	default:
		return nil
	}
	if err := k.create(ctx, now, due); err != nil && !errors.Is(err, fault.Conflict) {
		return err
	}
	return k.load(ctx)
}

func (k *keyset) create(ctx context.Context, now, activeAt time.Time) error {
	var (
		kid    string
		pub    crypto.PublicKey
		sealed []byte
	)
	if k.hw != nil {
		var id [4]byte
		if _, err := rand.Read(id[:]); err != nil {
			return fmt.Errorf("token: key id: %w", err)
		}
		kid = fmt.Sprintf("%d-%x", activeAt.Unix(), id)
		signer, err := k.hw.Generate(tokenKeyName(kid))
		if err != nil {
			return fmt.Errorf("token: generate signing key: %w", err)
		}
		pub = signer.Public()
		if sealed, err = k.box.Seal(sealName(kid), []byte(inToken+tokenKeyName(kid))); err != nil {
			return err
		}
	} else {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("token: generate signing key: %w", err)
		}
		kid, pub = fmt.Sprintf("%d-%x", activeAt.Unix(), priv.PublicKey.X.Bytes()[:4]), &priv.PublicKey
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return fmt.Errorf("token: encode signing key: %w", err)
		}
		if sealed, err = k.box.Seal(sealName(kid), der); err != nil {
			return err
		}
	}
	pubJSON, err := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	if err != nil {
		return fmt.Errorf("token: encode public key: %w", err)
	}
	return k.store.InsertTokenKey(ctx, StoredKey{KID: kid, Alg: string(jose.ES256), PrivateSealed: sealed,
		PublicJWK: string(pubJSON), CreatedAt: now, ActiveAt: activeAt})
}

// tokenKeyName names a signing key in a token (its label's stem).
func tokenKeyName(kid string) string { return "token-" + kid }

// open returns the signer and public key of a stored key: its sealed
// private key, or the token's key it refers to.
func (k *keyset) open(s StoredKey) (jose.Signer, *ecdsa.PublicKey, error) {
	der, err := k.box.Open(sealName(s.KID), s.PrivateSealed)
	if err != nil {
		return nil, nil, err
	}
	var key any
	var pub *ecdsa.PublicKey
	if bytes.HasPrefix(der, []byte(inToken)) {
		if k.hw == nil {
			return nil, nil, errors.New("it is in a PKCS#11 token, and this control plane has none (serve --ca-key)")
		}
		var jwk jose.JSONWebKey
		if err := json.Unmarshal([]byte(s.PublicJWK), &jwk); err != nil {
			return nil, nil, fmt.Errorf("its public key: %w", err)
		}
		var ok bool
		if pub, ok = jwk.Key.(*ecdsa.PublicKey); !ok {
			return nil, nil, fmt.Errorf("its public key is %T, want ECDSA", jwk.Key)
		}
		signer, err := k.hw.SignerFor(pub)
		if err != nil {
			return nil, nil, err
		}
		key = cryptosigner.Opaque(signer)
	} else {
		parsed, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, nil, err
		}
		priv, ok := parsed.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("it is %T, want ECDSA", parsed)
		}
		key, pub = jose.JSONWebKey{Key: priv, KeyID: s.KID}, &priv.PublicKey
	}
	opts := (&jose.SignerOptions{}).WithType(jwtType)
	if _, opaque := key.(jose.OpaqueSigner); opaque {
		opts = opts.WithHeader("kid", s.KID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return nil, nil, err
	}
	return signer, pub, nil
}

func (k *keyset) load(ctx context.Context) error {
	stored, err := k.store.TokenKeys(ctx)
	if err != nil {
		return fmt.Errorf("token: load signing keys: %w", err)
	}
	k.mu.RLock()
	have := map[string]*signingKey{}
	for _, sk := range k.keys {
		have[sk.KID] = sk
	}
	k.mu.RUnlock()
	keys := make([]*signingKey, 0, len(stored))
	for _, s := range stored {
		if sk, ok := have[s.KID]; ok {
			keys = append(keys, sk)
			continue
		}
		signer, pub, err := k.open(s)
		if err != nil {
			return fmt.Errorf("token: signing key %s: %w", s.KID, err)
		}
		keys = append(keys, &signingKey{StoredKey: s, pub: pub, signer: signer})
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].ActiveAt.Before(keys[j].ActiveAt) })
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
	return nil
}

// current returns the key that signs at now: the newest already active.
func (k *keyset) current(now time.Time) (*signingKey, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for i := len(k.keys) - 1; i >= 0; i-- {
		if !k.keys[i].ActiveAt.After(now) {
			return k.keys[i], nil
		}
	}
	return nil, fmt.Errorf("%w: no active token signing key", fault.Unavailable)
}

// published reports the keys a verifier may need at now: created already,
// and not yet past maxTTL after their successor became active.
func (k *keyset) published(now time.Time) []*signingKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var out []*signingKey
	for i, sk := range k.keys {
		if sk.CreatedAt.After(now) {
			continue
		}
		if i+1 < len(k.keys) {
			if next := k.keys[i+1]; !next.ActiveAt.After(now) && !now.Before(next.ActiveAt.Add(k.maxTTL)) {
				continue
			}
		}
		out = append(out, sk)
	}
	return out
}

// JWKS returns the published public keys.
func (k *keyset) JWKS(now time.Time) jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, sk := range k.published(now) {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: sk.pub, KeyID: sk.KID, Algorithm: sk.Alg, Use: "sig"})
	}
	return set
}

// verifier returns the public key for kid if it is published at now.
func (k *keyset) verifier(now time.Time) func(kid string) (any, bool) {
	return func(kid string) (any, bool) {
		for _, sk := range k.published(now) {
			if sk.KID == kid {
				return sk.pub, true
			}
		}
		return nil, false
	}
}
