package console_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"github.com/bulkhead-dev/bulkhead/api"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/console"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

const origin = "https://console.bulkhead.test"

// nobody authenticates no certificate: the console's own routes need none.
type nobody struct{}

func (nobody) Authenticate(context.Context, *x509.Certificate) (peer.Principal, error) {
	return peer.Principal{}, errors.New("no certificates here")
}

// noRequests is an elevation service with nothing pending.
type noRequests struct{}

func (noRequests) Elevations(context.Context, elevation.Filter, bool) ([]elevation.Elevation, error) {
	return nil, nil
}
func (noRequests) Elevation(context.Context, peer.Principal, string) (elevation.Elevation, error) {
	return elevation.Elevation{}, fault.NotFound
}
func (noRequests) Approve(context.Context, peer.Principal, string, elevation.Binding, string) (elevation.Elevation, error) {
	return elevation.Elevation{}, fault.NotFound
}
func (noRequests) Deny(context.Context, peer.Principal, string, elevation.Binding, string) (elevation.Elevation, error) {
	return elevation.Elevation{}, fault.NotFound
}
func (noRequests) Task(context.Context, peer.Principal, string) (elevation.Task, error) {
	return elevation.Task{}, fault.NotFound
}
func (noRequests) Tasks(context.Context, bool) ([]elevation.Task, error) { return nil, nil }

// noAgents and noPolicies stand for services with nothing registered.
type noAgents struct{}

func (noAgents) ListAgents(context.Context) ([]identity.Agent, error) { return nil, nil }
func (noAgents) GetAgent(context.Context, string) (identity.Agent, error) {
	return identity.Agent{}, fault.NotFound
}
func (noAgents) AgentCerts(context.Context, string) ([]identity.Cert, error) { return nil, nil }
func (noAgents) Revoke(context.Context, audit.Actor, string, string) ([]string, error) {
	return nil, fault.NotFound
}
func (noAgents) SetEnabled(context.Context, audit.Actor, string, bool) (identity.Agent, error) {
	return identity.Agent{}, fault.NotFound
}

type noReports struct{}

func (noReports) Assessment(context.Context) (api.Assessment, error) { return api.Assessment{}, nil }
func (noReports) BlastRadius(context.Context, string) (api.BlastRadius, error) {
	return api.BlastRadius{}, fault.NotFound
}

type noPolicies struct{}

func (noPolicies) Versions(context.Context) ([]policy.Version, policy.State, error) {
	return nil, policy.State{}, nil
}
func (noPolicies) Version(context.Context, int64) (policy.Version, policy.State, error) {
	return policy.Version{}, policy.State{}, fault.NotFound
}
func (noPolicies) ShadowReport(context.Context, int64, int) (policy.ShadowSummary, []policy.ShadowDiff, error) {
	return policy.ShadowSummary{}, nil, fault.NotFound
}
func (noPolicies) Roles(context.Context, string) ([]policy.RoleAssignment, error) { return nil, nil }

type fixture struct {
	mux   *http.ServeMux
	db    *store.DB
	clock *clock.Fake
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	db := storetest.Backends()[0].Open(t)
	clk := clock.NewFake(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	box, err := secretbox.LoadOrCreate(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	log := audit.New(db, clk, storetest.Logger(t))
	c, err := console.New(console.Config{Store: db, Audit: log, Sealer: box, Clock: clk, Logger: storetest.Logger(t), Origin: origin,
		Guard: peer.Guard{Auth: nobody{}, Audit: log, Logger: storetest.Logger(t)}, Elevations: noRequests{}, Agents: noAgents{}, Policies: noPolicies{}, Reports: noReports{},
		Evidence: console.Evidence{Events: db, Stream: audit.StreamHandler(log, db, storetest.Logger(t)),
			Verify: func(context.Context) (audit.Report, error) { return audit.Report{}, nil }}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Routes(mux)
	return fixture{mux: mux, db: db, clock: clk}
}

func (f fixture) do(method, path, origin string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "https://console.bulkhead.test"+path, strings.NewReader(`{}`))
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, r)
	return w
}

func TestNewRefusesWhatPasskeysCannotUse(t *testing.T) {
	for _, o := range []string{"http://console.bulkhead.test", "https://", "https://console.bulkhead.test/path", "::"} {
		if _, err := console.New(console.Config{Origin: o}); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
}

// Every page forbids inline script, framing and caching.
func TestPagesCarryStrictHeaders(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/console/login", "/console/register", "/console/static/console.js"} {
		w := f.do(http.MethodGet, path, "")
		h := w.Header()
		if w.Code != http.StatusOK || !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") ||
			!strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") || h.Get("X-Frame-Options") != "DENY" ||
			h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %v", path, w.Code, h)
		}
		if strings.Contains(w.Body.String(), "<script>") {
			t.Errorf("%s has inline script", path)
		}
	}
	// Without a session every page sends the browser to sign in, and the
	// event stream opens to nobody.
	for _, path := range []string{"/console/", "/console/approvals", "/console/decisions", "/console/audit", "/console/agents", "/console/policies",
		"/console/assess", "/console/blast-radius?agent=alpha", "/console/agents/alpha"} {
		if w := f.do(http.MethodGet, path, ""); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/login" {
			t.Errorf("%s without a session: %d %v", path, w.Code, w.Header())
		}
	}
	if w := f.do(http.MethodGet, "/console/api/events", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("the event stream without a session: %d", w.Code)
	}
}

// State-changing requests from another origin, or none, are refused and
// recorded; a forged or expired session opens nothing.
func TestForgedRequestsAreRefused(t *testing.T) {
	f := newFixture(t)
	for _, o := range []string{"", "https://evil.example", "https://console.bulkhead.test.evil.example"} {
		if w := f.do(http.MethodPost, "/console/api/login/begin", o); w.Code != http.StatusForbidden {
			t.Errorf("origin %q: %d", o, w.Code)
		}
	}
	forged := &http.Cookie{Name: "__Host-bulkhead-session", Value: "AAAA"}
	if w := f.do(http.MethodGet, "/console/", "", forged); w.Code != http.StatusSeeOther {
		t.Errorf("forged session: %d", w.Code)
	}
	if w := f.do(http.MethodPost, "/console/api/logout", origin, forged); w.Code != http.StatusUnauthorized {
		t.Errorf("logout with a forged session: %d", w.Code)
	}
	if w := f.do(http.MethodPost, "/console/api/register/finish", origin); w.Code != http.StatusUnauthorized {
		t.Errorf("registration finished without a ceremony: %d", w.Code)
	}
	rows, err := f.db.Events(context.Background(), audit.Query{AfterSeq: -1})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, r := range rows {
		ev, err := audit.Decode(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Decision == audit.Deny {
			refused++
		}
	}
	// Three cross-origin posts, the forged session's logout and the
	// registration finished without a ceremony.
	if refused != 5 {
		t.Fatalf("%d refusals recorded, want 5", refused)
	}
}

// A registration link is good once, before it expires.
func TestRegistrationLinks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	now := f.clock.Now()
	sum := sha256.Sum256([]byte("tok"))
	if err := f.db.CreatePasskeyLink(ctx, console.Link{Hash: hex.EncodeToString(sum[:]), Operator: "spiffe://bulkhead.local/operator/ada", ExpiresAt: now.Add(time.Hour), CreatedAt: now, CreatedBy: "op"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"a good link", `{"link":"tok"}`, http.StatusOK},
		{"no link", `{}`, http.StatusUnauthorized},
		{"an unknown link", `{"link":"nope"}`, http.StatusUnauthorized},
		{"an unknown field", `{"link":"nope","operator":"eve"}`, http.StatusBadRequest},
	} {
		r := httptest.NewRequest(http.MethodPost, "https://console.bulkhead.test/console/api/register/begin", strings.NewReader(tc.body))
		r.Header.Set("Origin", origin)
		w := httptest.NewRecorder()
		f.mux.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: %d %s", tc.name, w.Code, w.Body)
		}
	}
	f.clock.Advance(time.Hour)
	r := httptest.NewRequest(http.MethodPost, "https://console.bulkhead.test/console/api/register/begin", strings.NewReader(`{"link":"tok"}`))
	r.Header.Set("Origin", origin)
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "expired") {
		t.Fatalf("an expired link: %d %s", w.Code, w.Body)
	}
}

// FuzzCeremonyAnswers posts hostile bodies as a browser's answer to a
// registration and a sign-in in progress: nothing may panic, and nothing
// is registered or signed in.
func FuzzCeremonyAnswers(f *testing.F) {
	f.Add([]byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"attestationObject":"o2NmbXRkbm9uZQ","clientDataJSON":"e30"}}`))
	f.Add([]byte(`{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"authenticatorData":"AAAA","clientDataJSON":"e30","signature":"AAAA","userHandle":"AAAA"}}`))
	f.Add([]byte(`[]`))
	// One console for the whole run (a database per input would be slow),
	// with a registration link "tok".
	fx := newFixture(f)
	sum := sha256.Sum256([]byte("tok"))
	now := fx.clock.Now()
	if err := fx.db.CreatePasskeyLink(context.Background(), console.Link{Hash: hex.EncodeToString(sum[:]),
		Operator: "spiffe://bulkhead.local/operator/ada", ExpiresAt: now.Add(time.Hour), CreatedAt: now, CreatedBy: "op"}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, step := range []string{"register", "login"} {
			begin := `{}`
			if step == "register" {
				begin = `{"link":"tok"}`
			}
			r := httptest.NewRequest(http.MethodPost, "https://console.bulkhead.test/console/api/"+step+"/begin", strings.NewReader(begin))
			r.Header.Set("Origin", origin)
			w := httptest.NewRecorder()
			fx.mux.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				t.Fatalf("%s begin: %d %s", step, w.Code, w.Body)
			}
			r = httptest.NewRequest(http.MethodPost, "https://console.bulkhead.test/console/api/"+step+"/finish", strings.NewReader(string(body)))
			r.Header.Set("Origin", origin)
			for _, c := range w.Result().Cookies() {
				r.AddCookie(c)
			}
			w = httptest.NewRecorder()
			fx.mux.ServeHTTP(w, r)
			if w.Code == http.StatusOK {
				t.Fatalf("%s finished with fuzz: %s", step, body)
			}
		}
	})
}

// A ceremony is answered once: the same ceremony cookie and answer played
// again are refused, whatever the first answer was.
func TestCeremonyAnsweredOnce(t *testing.T) {
	f := newFixture(t)
	w := f.do(http.MethodPost, "/console/api/login/begin", origin)
	if w.Code != http.StatusOK {
		t.Fatalf("begin: %d", w.Code)
	}
	cookies := w.Result().Cookies()
	var bodies []string
	for range 2 {
		w := f.do(http.MethodPost, "/console/api/login/finish", origin, cookies...)
		bodies = append(bodies, w.Body.String())
	}
	if strings.Contains(bodies[0], "already answered") || !strings.Contains(bodies[1], "already answered") {
		t.Fatalf("answers: %q", bodies)
	}
	// A ceremony kept past its five minutes is refused, though its sealed
	// cookie still opens.
	w = f.do(http.MethodPost, "/console/api/login/begin", origin)
	f.clock.Advance(console.SessionTTL)
	if w := f.do(http.MethodPost, "/console/api/login/finish", origin, w.Result().Cookies()...); !strings.Contains(w.Body.String(), "expired") {
		t.Fatalf("a stale ceremony: %d %s", w.Code, w.Body)
	}
}
