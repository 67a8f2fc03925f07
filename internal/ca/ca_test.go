package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("bulkhead.local")
	alpha = spiffeid.RequireFromPath(td, "/agent/alpha")
)

func newCA(t *testing.T, clk clock.Clock) (*ca.Authority, string) {
	t.Helper()
	dir := t.TempDir()
	a, created, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dir, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("a fresh directory did not create a CA")
	}
	return a, dir
}

func TestLoadOrCreateReusesTheCA(t *testing.T) {
	clk := clock.NewFake(time.Now())
	a, dir := newCA(t, clk)
	b, created, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dir, Clock: clk})
	if err != nil || created {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	if !a.Root().Equal(b.Root()) || !a.Intermediate().Equal(b.Intermediate()) {
		t.Fatal("reload produced a different CA")
	}
	for _, f := range []string{"root_key.pem", "intermediate_key.pem"} {
		if st, _ := os.Stat(filepath.Join(dir, f)); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	// The root is a CA for this trust domain only, and the intermediate
	// cannot sign further CAs.
	if !a.Root().IsCA || a.Root().URIs[0].String() != "spiffe://bulkhead.local" {
		t.Errorf("root: IsCA=%v URIs=%v", a.Root().IsCA, a.Root().URIs)
	}
	if !a.Intermediate().MaxPathLenZero || a.Intermediate().CheckSignatureFrom(a.Root()) != nil {
		t.Error("intermediate is not a path-length-zero CA signed by the root")
	}
}

func TestLoadOrCreateRefusesAnotherTrustDomain(t *testing.T) {
	clk := clock.Real{}
	_, dir := newCA(t, clk)
	_, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("other.example"), Dir: dir, Clock: clk})
	if err == nil || !strings.Contains(err.Error(), "another trust domain") {
		t.Fatalf("got %v, want a trust domain mismatch", err)
	}
}

func TestIntermediateIsRotatedBeforeItExpires(t *testing.T) {
	clk := clock.NewFake(time.Now())
	a, dir := newCA(t, clk)
	clk.Advance(ca.IntermediateTTL * 3 / 4)
	b, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: dir, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Root().Equal(b.Root()) {
		t.Fatal("root changed")
	}
	if a.Intermediate().Equal(b.Intermediate()) {
		t.Fatal("intermediate with a quarter of its life left was not rotated")
	}
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignSVIDFollowsTheX509SVIDStandard(t *testing.T) {
	// Whole seconds: certificates carry second precision.
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	a, _ := newCA(t, clk)
	key := p256(t)
	leaf, err := a.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify([]*x509.Certificate{leaf, a.Intermediate()}, a.X509Bundle(), x509svid.WithTime(clk.Now()))
	if err != nil || id != alpha {
		t.Fatalf("verify: %v, %v", id, err)
	}
	switch {
	case len(leaf.URIs) != 1:
		t.Errorf("URI SANs = %v", leaf.URIs)
	case leaf.IsCA || !leaf.BasicConstraintsValid:
		t.Error("leaf must carry basicConstraints CA:false")
	case leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("key usage = %v", leaf.KeyUsage)
	case leaf.NotAfter.Sub(clk.Now()) != time.Hour:
		t.Errorf("lifetime = %v", leaf.NotAfter.Sub(clk.Now()))
	case leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 64:
		t.Errorf("serial %v is not a large positive random number", leaf.SerialNumber)
	}
	long, err := a.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: key.Public(), TTL: 10 * ca.MaxSVIDTTL})
	if err != nil || long.NotAfter.Sub(clk.Now()) != ca.MaxSVIDTTL {
		t.Errorf("TTL is not capped at %s: %v, %v", ca.MaxSVIDTTL, long.NotAfter.Sub(clk.Now()), err)
	}
}

// A delegation computes its TTL from its end and its own clock reading;
// the CA reads the clock a moment later. Only a hard bound keeps the
// certificate inside the delegation, in whole seconds.
func TestSignSVIDNeverOutlivesItsBound(t *testing.T) {
	start := time.Now().Truncate(time.Second)
	clk := clock.NewFake(start)
	a, _ := newCA(t, clk)
	bound := start.Add(2*time.Minute + 999*time.Millisecond)
	ttl := bound.Sub(clk.Now())
	clk.Advance(5 * time.Millisecond) // the CA's later reading
	leaf, err := a.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: p256(t).Public(), TTL: ttl, NotAfter: bound})
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(bound) || !leaf.NotAfter.Equal(start.Add(2*time.Minute)) {
		t.Fatalf("not after %s, bound %s", leaf.NotAfter, bound)
	}
	if _, err := a.SignSVID(ca.SVIDRequest{ID: alpha, PublicKey: p256(t).Public(), TTL: time.Hour, NotAfter: clk.Now()}); err == nil {
		t.Fatal("a certificate already expired was signed")
	}
}

func TestSignSVIDRefusals(t *testing.T) {
	a, _ := newCA(t, clock.Real{})
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	cases := []struct {
		name string
		req  ca.SVIDRequest
		want string
	}{
		{"other trust domain", ca.SVIDRequest{ID: spiffeid.RequireFromString("spiffe://evil.example/agent/alpha"), PublicKey: p256(t).Public(), TTL: time.Hour}, "not in trust domain"},
		{"weak key", ca.SVIDRequest{ID: alpha, PublicKey: weak.Public(), TTL: time.Hour}, "too weak"},
		{"no key", ca.SVIDRequest{ID: alpha, TTL: time.Hour}, "no public key"},
		{"zero TTL", ca.SVIDRequest{ID: alpha, PublicKey: p256(t).Public()}, "TTL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := a.SignSVID(c.req); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want error containing %q", err, c.want)
			}
		})
	}
}

func csrPEM(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func u(s string) *url.URL { v, _ := url.Parse(s); return v }

func TestParseCSR(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	good := csrPEM(t, p256(t), &x509.CertificateRequest{})
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)/2] ^= 1
	cases := []struct {
		name string
		pem  []byte
		want string // "" means accepted
	}{
		{"no SAN", good, ""},
		{"own SPIFFE ID", csrPEM(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{alpha.URL()}}), ""},
		{"Ed25519", csrPEM(t, edKey, &x509.CertificateRequest{}), ""},
		{"RSA 2048", csrPEM(t, rsa2048, &x509.CertificateRequest{}), ""},
		{"subject is ignored", csrPEM(t, p256(t), &x509.CertificateRequest{Subject: pkixName("root")}), ""},
		{"empty", nil, "empty"},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "want CERTIFICATE REQUEST"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "bad certificate signing request"},
		{"broken signature", tampered, "bad certificate signing request"},
		{"trailing data", append(append([]byte(nil), good...), good...), "trailing data"},
		{"another agent", csrPEM(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://bulkhead.local/agent/beta")}}), "CSR names spiffe://bulkhead.local/agent/beta"},
		{"another trust domain", csrPEM(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://evil.example/agent/alpha")}}), "CSR names spiffe://evil.example/agent/alpha"},
		{"non-SPIFFE URI", csrPEM(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{u("https://evil.example/")}}), "not a SPIFFE ID"},
		{"two URIs", csrPEM(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{alpha.URL(), alpha.URL()}}), "2 URI SANs"},
		{"DNS SAN", csrPEM(t, p256(t), &x509.CertificateRequest{DNSNames: []string{"localhost"}}), "only a SPIFFE URI SAN"},
		{"email SAN", csrPEM(t, p256(t), &x509.CertificateRequest{EmailAddresses: []string{"a@b.c"}}), "only a SPIFFE URI SAN"},
		{"RSA 1024", csrPEM(t, rsa1024, &x509.CertificateRequest{}), "too weak"},
		{"P-224", csrPEM(t, p224, &x509.CertificateRequest{}), "P-224"},
		{"oversized", append(good, make([]byte, ca.MaxCSRSize)...), "over the"},
		{"asks to be a CA", csrPEM(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkixExt{basicConstraintsCA()}}), "CA powers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ca.ParseCSR(c.pem, alpha)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ca.ErrBadCSR) {
				t.Fatalf("got %v, want ErrBadCSR containing %q", err, c.want)
			}
		})
	}
}

func TestCRL(t *testing.T) {
	a, _ := newCA(t, clock.Real{})
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	der, err := a.CRL([]ca.Revoked{{Serial: "0a1b", At: at}, {Serial: "ff", At: at}}, 7)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(a.Intermediate()); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if crl.Number.Cmp(big.NewInt(7)) != 0 || len(crl.RevokedCertificateEntries) != 2 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Cmp(big.NewInt(0x0a1b)) != 0 || !crl.RevokedCertificateEntries[0].RevocationTime.Equal(at) {
		t.Fatalf("CRL = number %v entries %+v", crl.Number, crl.RevokedCertificateEntries)
	}
	if _, err := a.CRL([]ca.Revoked{{Serial: "not-hex"}}, 8); err == nil {
		t.Fatal("bad serial accepted")
	}
}

func TestSPIFFEBundle(t *testing.T) {
	a, _ := newCA(t, clock.Real{})
	b, err := a.SPIFFEBundle()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"use":"x509-svid"`, `"spiffe_sequence":1`, `"spiffe_refresh_hint":300`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("bundle lacks %s: %s", want, b)
		}
	}
}
