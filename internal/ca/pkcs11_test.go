package ca_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/ca/hsmtest"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

func openHSM(t *testing.T, u ca.PKCS11URI) *ca.PKCS11KeyStore {
	t.Helper()
	ks, err := ca.OpenPKCS11(u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

// A CA whose keys never exist outside the token: generated in SoftHSM2,
// sensitive and not extractable; the CA directory holds certificates
// only; its SVIDs pass go-spiffe's verifier; and a restart finds the same
// keys in the token.
func TestCAKeysInAnHSM(t *testing.T) {
	u := hsmtest.Token(t)
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	dir := t.TempDir()
	a, created, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dir, Clock: clk, Keys: openHSM(t, u)})
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), "key") {
			t.Fatalf("the CA directory holds %s", e.Name())
		}
	}
	ks := openHSM(t, u)
	for _, cert := range []*x509.Certificate{a.Root(), a.Intermediate()} {
		extractable, sensitive, err := ks.ExtractableFor(cert.PublicKey)
		if err != nil || extractable || !sensitive {
			t.Fatalf("%s: extractable %v, sensitive %v, %v", cert.Subject, extractable, sensitive, err)
		}
	}
	key := p256(t)
	leaf, err := a.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := x509svid.Verify([]*x509.Certificate{leaf, a.Intermediate()}, a.X509Bundle(), x509svid.WithTime(clk.Now())); err != nil || id != alpha {
		t.Fatalf("go-spiffe verify: %v %v", id, err)
	}
	// A restart: the same root and intermediate, their keys from the token.
	b, created, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dir, Clock: clk, Keys: ks})
	if err != nil || created || !b.Root().Equal(a.Root()) || !b.Intermediate().Equal(a.Intermediate()) {
		t.Fatalf("reopen: created %v, %v", created, err)
	}
	leaf2, err := b.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: time.Hour})
	if err != nil || leaf2.CheckSignatureFrom(a.Intermediate()) != nil {
		t.Fatalf("after the restart: %v", err)
	}
}

// The token refuses what it should: a wrong PIN, a token that is not
// there; and a key the token lacks is "not there" to the CA, not another
// error.
func TestHSMRefusals(t *testing.T) {
	// Tokens are made before any is opened: the library lists tokens when
	// it is first loaded. PKCS#11 logs an application in per token, not
	// per session: the wrong PIN is tried on a token nothing has opened.
	u, wrong := hsmtest.Token(t), hsmtest.Token(t)
	if _, err := openHSM(t, u).Signer("root"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing key: %v", err)
	}
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, []byte("0000"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong.PINSource = "file:" + pin
	if _, err := ca.OpenPKCS11(wrong); err == nil || !strings.Contains(err.Error(), "PIN_INCORRECT") {
		t.Fatalf("a wrong PIN: %v", err)
	}
	missing := u
	missing.Token = "no-such-token"
	if _, err := ca.OpenPKCS11(missing); err == nil {
		t.Fatal("a token that is not there opened")
	}
}

func TestParsePKCS11URI(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ca.PKCS11URI
		err  string
	}{
		{"pkcs11:token=ca;object=prod-?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin",
			ca.PKCS11URI{Token: "ca", Object: "prod-", Module: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "file:/etc/pin"}, ""},
		{"pkcs11:token=my%20ca?module-path=/lib/p11.so",
			ca.PKCS11URI{Token: "my ca", Object: "bulkhead-", Module: "/lib/p11.so"}, ""},
		{"pkcs11:token=ca?module-path=/lib/p11.so&pin-source=env:HSM_PIN",
			ca.PKCS11URI{Token: "ca", Object: "bulkhead-", Module: "/lib/p11.so", PINSource: "env:HSM_PIN"}, ""},
		{"file:/x", ca.PKCS11URI{}, "must start with pkcs11:"},
		{"pkcs11:object=x?module-path=/lib/p11.so", ca.PKCS11URI{}, "token= is required"},
		{"pkcs11:token=ca", ca.PKCS11URI{}, "module-path= is required"},
		{"pkcs11:token=ca?module-path=/lib/p11.so&pin-value=1234", ca.PKCS11URI{}, "would put the PIN in the URI"},
		{"pkcs11:token=ca;token=other?module-path=/lib/p11.so", ca.PKCS11URI{}, "appears twice"},
		{"pkcs11:token=ca;serial=1?module-path=/lib/p11.so", ca.PKCS11URI{}, "not supported"},
		{"pkcs11:token=ca?module-path=/lib/p11.so&pin-source=https://x", ca.PKCS11URI{}, "file:PATH or env:NAME"},
		{"pkcs11:token=%zz?module-path=/lib/p11.so", ca.PKCS11URI{}, "invalid URL escape"},
	} {
		got, err := ca.ParsePKCS11URI(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v", c.in, got, err)
		}
	}
}

func FuzzParsePKCS11URI(f *testing.F) {
	f.Add("pkcs11:token=ca;object=prod-?module-path=/lib/p11.so&pin-source=file:/etc/pin")
	f.Add("pkcs11:token=%41;;?&")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ca.ParsePKCS11URI(s)
		if err != nil {
			return
		}
		if u.Token == "" || u.Module == "" {
			t.Fatalf("accepted %q as %+v", s, u)
		}
		if back, err := ca.ParsePKCS11URI(u.String()); err != nil || back != u {
			t.Fatalf("%+v does not round-trip: %s → %+v %v", u, u.String(), back, err)
		}
	})
}

// Issuing an SVID with the CA's key in a file and in SoftHSM2, side by
// side: what keeping the key in a token costs per certificate.
func BenchmarkSignSVIDKeyStores(b *testing.B) {
	key := p256(b)
	for _, c := range []struct {
		name string
		keys func(b *testing.B) ca.KeyStore
	}{
		{"file", func(b *testing.B) ca.KeyStore { return ca.FileKeyStore{Dir: b.TempDir()} }},
		{"softhsm2", func(b *testing.B) ca.KeyStore {
			ks, err := ca.OpenPKCS11(hsmtest.Token(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { ks.Close() })
			return ks
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			a, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: b.TempDir(), Clock: clock.Real{}, Keys: c.keys(b)})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := a.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: time.Hour}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An Ed25519 key (the audit log's checkpoint key) in the token: made
// there, not extractable, found again by label, and its signatures are
// ordinary Ed25519 ones.
func TestEd25519KeyInAnHSM(t *testing.T) {
	u1, u2, u3 := hsmtest.Token(t), hsmtest.Token(t), hsmtest.Token(t) // before any is opened
	ks := openHSM(t, u1)
	s, err := ks.Ed25519("audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("bulkhead.local/audit\n42\n")
	sig, err := s.Sign(nil, msg, crypto.Hash(0))
	if err != nil || !ed25519.Verify(s.Public().(ed25519.PublicKey), msg, sig) {
		t.Fatalf("signature: %v", err)
	}
	again, err := ks.Ed25519("audit", nil)
	if err != nil || !again.Public().(ed25519.PublicKey).Equal(s.Public()) {
		t.Fatalf("found again: %v", err)
	}
	// The store names a key the token does not hold: refused, not made.
	other := openHSM(t, u2)
	if _, err := other.Ed25519("audit", s.Public().(ed25519.PublicKey)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("an expected key that is not there: %v", err)
	}
	// A signer used after its key store closed fails, and does not crash.
	ks2 := openHSM(t, u3)
	late, err := ks2.Ed25519("audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	ks2.Close()
	if _, err := late.Sign(nil, msg, crypto.Hash(0)); err == nil {
		t.Fatal("signed after Close")
	}
	if extractable, sensitive, err := ks.Extractable("audit"); err != nil || extractable || !sensitive {
		t.Fatalf("extractable %v, sensitive %v, %v", extractable, sensitive, err)
	}
	if _, err := s.Sign(nil, msg, crypto.SHA256); err == nil {
		t.Fatal("signed a digest as Ed25519")
	}
}

// Replicas share one token: a second replica (the root copied, no
// intermediate of its own) makes its own intermediate beside the first's,
// and a data directory that lost its root makes a new root beside the old
// one. Nothing deletes a key another replica signs with.
func TestReplicasShareAToken(t *testing.T) {
	u := hsmtest.Token(t)
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	dirA, dirB, dirC := t.TempDir(), t.TempDir(), t.TempDir()
	a, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dirA, Clock: clk, Keys: openHSM(t, u)})
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(filepath.Join(dirA, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "root.pem"), root, 0o600); err != nil {
		t.Fatal(err)
	}
	b, created, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dirB, Clock: clk, Keys: openHSM(t, u)})
	if err != nil || created || !b.Root().Equal(a.Root()) || b.Intermediate().Equal(a.Intermediate()) {
		t.Fatalf("replica B: created %v, %v", created, err)
	}
	c, created, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dirC, Clock: clk, Keys: openHSM(t, u)})
	if err != nil || !created || c.Root().Equal(a.Root()) {
		t.Fatalf("a lost root: created %v, %v", created, err)
	}
	key := p256(t)
	for name, x := range map[string]*ca.Authority{"A": a, "B": b, "C": c} {
		leaf, err := x.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: time.Hour})
		if err != nil || leaf.CheckSignatureFrom(x.Intermediate()) != nil {
			t.Fatalf("replica %s no longer signs: %v", name, err)
		}
	}
	// And after a restart, A finds its own keys among the others.
	a2, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dirA, Clock: clk, Keys: openHSM(t, u)})
	if err != nil || !a2.Intermediate().Equal(a.Intermediate()) {
		t.Fatalf("A after a restart: %v", err)
	}
	if _, err := a2.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
}
