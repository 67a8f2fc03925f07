package identity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("bulkhead.local")
	operator = audit.Actor{Kind: audit.ActorOperator, ID: "spiffe://bulkhead.local/operator/admin"}
)

// failingRecorder stands for an audit log that cannot commit.
type failingRecorder struct{}

func (failingRecorder) Record(context.Context, audit.Event) (audit.Event, error) {
	return audit.Event{}, audit.ErrUnavailable
}

type fixture struct {
	svc   *identity.Service
	db    *store.DB
	clock *clock.Fake
	ca    *ca.Authority
}

func newFixture(t testing.TB, rec identity.Recorder) fixture {
	t.Helper()
	clk := clock.NewFake(time.Now())
	db := storetest.Backends()[0].Open(t)
	authority, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: t.TempDir(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		rec = audit.New(db, clk, storetest.Logger(t))
	}
	svc, err := identity.New(identity.Config{Store: db, CA: authority, Audit: rec, Clock: clk, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{svc: svc, db: db, clock: clk, ca: authority}
}

func csr(t testing.TB) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestNewRefusesMissingDependencies(t *testing.T) {
	if _, err := identity.New(identity.Config{}); err == nil {
		t.Fatal("a service without dependencies was built")
	}
}

func TestCreateAgentValidation(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	cases := []struct {
		name string
		ttl  time.Duration
		want error
	}{
		{"alpha", 0, nil},
		{"billing-bot.v2", 2 * time.Hour, nil},
		{"Alpha", 0, fault.Invalid},
		{"a/b", 0, fault.Invalid},
		{"", 0, fault.Invalid},
		{"-lead", 0, fault.Invalid},
		{strings.Repeat("a", 64), 0, fault.Invalid},
		{"short-ttl", 30 * time.Second, fault.Invalid},
		{"long-ttl", 31 * 24 * time.Hour, fault.Invalid},
		{"alpha", 0, fault.Conflict},
	}
	for _, c := range cases {
		a, err := f.svc.CreateAgent(ctx, operator, c.name, c.ttl, nil)
		if !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
			t.Errorf("CreateAgent(%q, %s) = %v, want %v", c.name, c.ttl, err, c.want)
		}
		if err == nil && a.SPIFFEID != "spiffe://bulkhead.local/agent/"+c.name {
			t.Errorf("SPIFFE ID = %s", a.SPIFFEID)
		}
	}
}

func TestJoinTokenExpiresOnTheClock(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	if _, err := f.svc.CreateAgent(ctx, operator, "alpha", 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []time.Duration{-time.Second, 25 * time.Hour} {
		if _, _, err := f.svc.CreateJoinToken(ctx, operator, "alpha", bad); !errors.Is(err, fault.Invalid) {
			t.Errorf("token TTL %s: %v", bad, err)
		}
	}
	tok, exp, err := f.svc.CreateJoinToken(ctx, operator, "alpha", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(f.clock.Now().Add(time.Minute)) {
		t.Fatalf("expiry %v", exp)
	}
	f.clock.Advance(time.Minute)
	if _, err := f.svc.Enroll(ctx, tok, csr(t)); !errors.Is(err, fault.Unauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("enroll at expiry: %v", err)
	}
}

// Fail closed: when the audit log cannot commit, nothing is created,
// issued or revoked.
func TestAuditFailureRefusesEveryAction(t *testing.T) {
	good := newFixture(t, nil)
	ctx := context.Background()
	if _, err := good.svc.CreateAgent(ctx, operator, "alpha", 0, nil); err != nil {
		t.Fatal(err)
	}
	tok, _, err := good.svc.CreateJoinToken(ctx, operator, "alpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The same store and CA, but an audit log that is down.
	broken, err := identity.New(identity.Config{Store: good.db, CA: good.ca, Audit: failingRecorder{}, Clock: good.clock, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broken.CreateAgent(ctx, operator, "beta", 0, nil); !errors.Is(err, fault.Unavailable) {
		t.Errorf("create agent: %v", err)
	}
	if _, err := good.db.GetAgent(ctx, "beta"); !errors.Is(err, fault.NotFound) {
		t.Errorf("agent created without a record: %v", err)
	}
	if _, err := broken.Enroll(ctx, tok, csr(t)); !errors.Is(err, fault.Unavailable) {
		t.Errorf("enroll: %v", err)
	}
	if certs, _ := good.db.ListCerts(ctx, "alpha"); len(certs) != 0 {
		t.Errorf("certificate issued without a record")
	}
	if _, _, err := broken.CreateJoinToken(ctx, operator, "alpha", 0); !errors.Is(err, fault.Unavailable) {
		t.Errorf("join token: %v", err)
	}
	if _, err := broken.Revoke(ctx, operator, "alpha", "x"); !errors.Is(err, fault.Unavailable) {
		t.Errorf("revoke: %v", err)
	}
	if _, err := broken.SetEnabled(ctx, operator, "alpha", false); !errors.Is(err, fault.Unavailable) {
		t.Errorf("disable: %v", err)
	}
	if a, _ := good.db.GetAgent(ctx, "alpha"); a.Status != identity.StatusActive {
		t.Errorf("status changed without a record: %s", a.Status)
	}
	// The token was not consumed: with the log back, enrollment works.
	if _, err := good.svc.Enroll(ctx, tok, csr(t)); err != nil {
		t.Errorf("enroll once the log is back: %v", err)
	}
}

func TestJoinTokenFormat(t *testing.T) {
	secret, err := identity.NewJoinSecret()
	if err != nil {
		t.Fatal(err)
	}
	var fp [32]byte
	fp[0] = 7
	s := identity.JoinTokenString(secret, fp)
	p, err := identity.ParseJoinToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Secret, secret) || !p.MatchesRoot(fp) {
		t.Fatal("round trip lost data")
	}
	for _, bad := range []string{"", "bhj1.", "bhj1.x.y", "bhj2." + s[5:], s + "A", s[:len(s)-1], strings.Replace(s, ".", "..", 1), strings.Repeat("a", 300)} {
		if _, err := identity.ParseJoinToken(bad); !errors.Is(err, fault.Invalid) {
			t.Errorf("ParseJoinToken(%q) = %v, want invalid", bad, err)
		}
	}
}

func FuzzParseJoinToken(f *testing.F) {
	secret, _ := identity.NewJoinSecret()
	f.Add(identity.JoinTokenString(secret, [32]byte{}))
	f.Add("bhj1.AAAA.BBBB")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := identity.ParseJoinToken(s)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			if strings.Contains(err.Error(), s) && len(s) > 8 {
				t.Fatalf("error echoes the token: %v", err)
			}
			return
		}
		// Accepted tokens have one canonical spelling.
		if identity.JoinTokenString(p.Secret, p.RootSHA256) != strings.TrimSpace(s) {
			t.Fatalf("non-canonical token accepted: %q", s)
		}
	})
}

// FuzzEnrollHandler sends arbitrary bodies to POST /v1/enroll: the handler
// must answer every one with a client error (never 5xx), and nothing beyond
// the one valid token's certificate is ever issued.
func FuzzEnrollHandler(f *testing.F) {
	fx := newFixture(f, nil)
	ctx := context.Background()
	if _, err := fx.svc.CreateAgent(ctx, operator, "alpha", 0, nil); err != nil {
		f.Fatal(err)
	}
	tok, _, err := fx.svc.CreateJoinToken(ctx, operator, "alpha", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	fx.svc.Routes(mux, storetest.Logger(f))
	valid, _ := json.Marshal(api.EnrollRequest{Token: tok, CSR: string(csr(f))})
	f.Add(valid)
	f.Add([]byte(`{"token":"bhj1.x.y","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`{"token":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"token":"` + tok + `","csr":"","extra":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/enroll", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code == http.StatusOK && !bytes.Contains(body, []byte(tok)) {
			t.Fatalf("issued without the valid token: %q", body)
		}
		if certs, _ := fx.db.ListCerts(ctx, "alpha"); len(certs) > 1 {
			t.Fatalf("%d certificates issued from one join token", len(certs))
		}
	})
}
