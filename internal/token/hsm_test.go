package token

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/ca/hsmtest"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

// Signing keys in a PKCS#11 token: made there, the store keeps only a
// reference (no private key, sealed or not), tokens signed with them
// verify against the published JWKS, another replica with the token
// signs with the same key, and one without the token refuses to start
// rather than sign with nothing.
func TestSigningKeysInAnHSM(t *testing.T) {
	ctx := context.Background()
	hw, err := ca.OpenPKCS11(hsmtest.Token(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hw.Close() })
	db := &memKeys{}
	box, err := secretbox.LoadOrCreate(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	ks := &keyset{store: db, box: box, hw: hw, period: 24 * time.Hour, lead: time.Hour, maxTTL: MaxTTL}
	if err := ks.refresh(ctx, now); err != nil {
		t.Fatal(err)
	}
	stored, _ := db.TokenKeys(ctx)
	if len(stored) != 1 {
		t.Fatalf("%d keys", len(stored))
	}
	ref, err := box.Open(sealName(stored[0].KID), stored[0].PrivateSealed)
	if err != nil || !strings.HasPrefix(string(ref), inToken) {
		t.Fatalf("the store holds %q, not a reference to the token", ref)
	}
	sk, err := ks.current(now)
	if err != nil {
		t.Fatal(err)
	}
	if extractable, sensitive, err := hw.ExtractableFor(sk.pub); err != nil || extractable || !sensitive {
		t.Fatalf("extractable %v, sensitive %v, %v", extractable, sensitive, err)
	}
	sign := func(k *keyset) string {
		sk, err := k.current(now)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := jwt.Signed(sk.signer).Claims(jwt.Claims{Subject: "alpha", Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	verify := func(raw string) {
		tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		key, ok := ks.verifier(now)(tok.Headers[0].KeyID)
		var c jwt.Claims
		if !ok || tok.Claims(key, &c) != nil || c.Subject != "alpha" {
			t.Fatalf("a token signed in the HSM does not verify (kid %q)", tok.Headers[0].KeyID)
		}
	}
	verify(sign(ks))
	replica := &keyset{store: db, box: box, hw: hw, period: 24 * time.Hour, lead: time.Hour, maxTTL: MaxTTL}
	if err := replica.load(ctx); err != nil {
		t.Fatal(err)
	}
	verify(sign(replica))
	without := &keyset{store: db, box: box, period: 24 * time.Hour, lead: time.Hour, maxTTL: MaxTTL}
	if err := without.load(ctx); err == nil || !strings.Contains(err.Error(), "PKCS#11 token") {
		t.Fatalf("a replica without the token: %v", err)
	}
}
