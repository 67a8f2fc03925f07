package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

const discoveryConfig = `listen: 127.0.0.1:9443
resource: RESOURCE
servers:
  - name: files
    mcp: { url: http://127.0.0.1:3001/mcp }
    callers: ["spiffe://bulkhead.local/agent/*"]
  - name: notes
    mcp: { url: http://127.0.0.1:3002/mcp }
    callers: ["spiffe://bulkhead.local/agent/*"]
  - name: billing
    http:
      url: http://127.0.0.1:8080
      routes: [{ name: invoices, method: GET, path: "/v1/invoices/{id}" }]
    callers: ["spiffe://bulkhead.local/agent/*"]
`

type denyAll struct{}

func (denyAll) Decide(context.Context, Decision) (policy.Decision, error) {
	return policy.Decision{}, nil
}

type discardRecorder struct{}

func (discardRecorder) Record(_ context.Context, ev audit.Event) (audit.Event, error) { return ev, nil }

// testGateway builds a gateway whose resource is resource, with no network
// behind it: enough to route, answer metadata and refuse.
func testGateway(t *testing.T, resource string) *Gateway {
	t.Helper()
	cfg, err := ParseConfig([]byte(strings.Replace(discoveryConfig, "RESOURCE", resource, 1)), nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	g, err := New(cfg, Deps{Verifier: &Verifier{Issuer: "https://cp.example", Audience: cfg.Resource, Keys: staticKeys{}, Clock: clock.Real{}},
		Revocations: NewRevocations(logger), Decider: denyAll{}, Audit: discardRecorder{}, Budgets: &budget.Memory{}, Baselines: noBaselines, Clock: clock.Real{}, Logger: logger,
		AuthorizationServer: "https://cp.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

func TestServerMetadata(t *testing.T) {
	const pr = WellKnownResource
	cases := []struct {
		name, resource, method, path string
		status                       int
		want                         string // the document's resource
	}{
		{"mcp server", "https://gw.example", "GET", pr + "/mcp/files", 200, "https://gw.example/mcp/files"},
		{"http api", "https://gw.example", "GET", pr + "/http/billing", 200, "https://gw.example/http/billing"},
		{"head", "https://gw.example", "HEAD", pr + "/mcp/files", 200, ""},
		{"the root still", "https://gw.example", "GET", pr, 200, "https://gw.example"},
		{"trailing slash on the resource", "https://gw.example/", "GET", pr + "/mcp/files", 200, "https://gw.example/mcp/files"},
		// Served for any valid name: the answer does not tell which exist.
		{"unknown but valid name", "https://gw.example", "GET", pr + "/mcp/nothing-here", 200, "https://gw.example/mcp/nothing-here"},
		{"below a server", "https://gw.example", "GET", pr + "/mcp/files/x", 404, ""},
		{"below an http api", "https://gw.example", "GET", pr + "/http/billing/v1", 404, ""},
		{"dot dot", "https://gw.example", "GET", pr + "/mcp/..", 404, ""},
		{"encoded slash", "https://gw.example", "GET", pr + "/mcp/a%2Fb", 404, ""},
		{"encoded dot dot", "https://gw.example", "GET", pr + "/mcp/%2e%2e", 404, ""},
		{"no name", "https://gw.example", "GET", pr + "/mcp/", 404, ""},
		{"other kind", "https://gw.example", "GET", pr + "/admin/files", 404, ""},
		{"not a read", "https://gw.example", "POST", pr + "/mcp/files", 404, ""},
		// RFC 9728 §3.1: the resource's path comes after the well-known path.
		{"resource with a path", "https://gw.example/base", "GET", pr + "/base/mcp/files", 200, "https://gw.example/base/mcp/files"},
		{"resource with a path, without it", "https://gw.example/base", "GET", pr + "/mcp/files", 404, ""},
		{"resource with a path, a longer one", "https://gw.example/base", "GET", pr + "/basement/mcp/files", 404, ""},
		{"resource with a query", "https://gw.example/?t=1", "GET", pr + "/mcp/files", 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := testGateway(t, c.resource)
			req := httptest.NewRequest(c.method, "https://127.0.0.1:9443"+c.path, nil)
			rec := httptest.NewRecorder()
			g.Handler().ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, rec.Code, rec.Body, c.status)
			}
			if c.want == "" {
				return
			}
			var md struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
				Bound                bool     `json:"tls_client_certificate_bound_access_tokens"`
				Bearer               []string `json:"bearer_methods_supported"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil {
				t.Fatal(err)
			}
			if md.Resource != c.want || len(md.AuthorizationServers) != 1 || md.AuthorizationServers[0] != "https://cp.example" || !md.Bound ||
				len(md.Bearer) != 1 || md.Bearer[0] != "header" || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("metadata = %s, want resource %s", rec.Body, c.want)
			}
		})
	}
}

func TestChallengePointsToTheServersMetadata(t *testing.T) {
	cases := []struct{ name, resource, path, want string }{
		{"mcp server", "https://gw.example", "/mcp/files", "https://gw.example/.well-known/oauth-protected-resource/mcp/files"},
		{"http api", "https://gw.example", "/http/billing/v1/invoices/7", "https://gw.example/.well-known/oauth-protected-resource/http/billing"},
		{"unknown but valid name", "https://gw.example", "/mcp/nothing-here", "https://gw.example/.well-known/oauth-protected-resource/mcp/nothing-here"},
		{"invalid name: the gateway's", "https://gw.example", "/mcp/a%20b", "https://gw.example/.well-known/oauth-protected-resource"},
		{"resource with a path", "https://gw.example/base", "/mcp/files", "https://gw.example/.well-known/oauth-protected-resource/base/mcp/files"},
		{"resource with a query: the gateway's", "https://gw.example/?t=1", "/mcp/files", "https://gw.example/?t=1/.well-known/oauth-protected-resource"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := testGateway(t, c.resource)
			rec := httptest.NewRecorder()
			g.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "https://127.0.0.1:9443"+c.path, strings.NewReader(`{}`)))
			got := rec.Header().Get("WWW-Authenticate")
			if rec.Code != http.StatusUnauthorized || !strings.Contains(got, `resource_metadata="`+c.want+`"`) {
				t.Fatalf("%d %q, want 401 pointing to %s", rec.Code, got, c.want)
			}
		})
	}
}

// staticKeys serves one verification key.
type staticKeys map[string]any

func (k staticKeys) Key(_ context.Context, kid string) (any, bool) { v, ok := k[kid]; return v, ok }

func TestVerifierAcceptsTheServersAudience(t *testing.T) {
	const (
		gw     = "https://gw.example"
		issuer = "https://cp.example"
		agent  = "spiffe://bulkhead.local/agent/alpha"
	)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	cert := agentCert(t, agent)
	now := time.Now()
	mint := func(aud ...string) string {
		c := token.Claims{Issuer: issuer, Subject: agent, ClientID: agent, Audience: aud, ID: aud[0],
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
			Cnf: &token.Confirmation{X5TS256: thumbprint(cert)}}
		raw, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	v := &Verifier{Issuer: issuer, Audience: gw, Keys: staticKeys{"k1": &key.PublicKey}, Clock: clock.NewFake(now)}
	cases := []struct {
		name   string
		aud    []string
		server string // the request's per-server audience; "" for none
		want   string // error text; "" to accept
	}{
		{"the gateway's, at a server", []string{gw}, gw + "/mcp/files", ""},
		{"the gateway's, elsewhere", []string{gw}, "", ""},
		{"the server's, at it", []string{gw + "/mcp/files"}, gw + "/mcp/files", ""},
		{"an http api's, at it", []string{gw + "/http/billing"}, gw + "/http/billing", ""},
		{"among others", []string{"https://other.example", gw + "/mcp/files"}, gw + "/mcp/files", ""},
		// Attack stories: a token for one server's URL presented elsewhere.
		{"server A's at server B", []string{gw + "/mcp/files"}, gw + "/mcp/notes", "nor this server"},
		{"a server's where no server is addressed", []string{gw + "/mcp/files"}, "", "not this gateway"},
		{"the same name as an http api", []string{gw + "/http/files"}, gw + "/mcp/files", "nor this server"},
		{"another gateway's server", []string{"https://gw2.example/mcp/files"}, gw + "/mcp/files", "not this gateway"},
		{"a host that merely starts the same", []string{"https://gw.example.evil/mcp/files"}, gw + "/mcp/files", "not this gateway"},
		{"a longer path", []string{gw + "/mcp/files/x"}, gw + "/mcp/files", "nor this server"},
		{"a shorter path", []string{gw + "/mcp"}, gw + "/mcp/files", "nor this server"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := mint(c.aud...)
			// Twice: the second time from the cache, which must not skip
			// the audience.
			for i := 0; i < 2; i++ {
				ctx := context.Background()
				if c.server != "" {
					ctx = WithServerAudience(ctx, c.server)
				}
				_, err := v.Verify(ctx, raw, cert)
				if c.want == "" && err != nil {
					t.Fatalf("try %d: refused: %v", i, err)
				}
				if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
					t.Fatalf("try %d: got %v, want an error containing %q", i, err, c.want)
				}
			}
		})
	}
	// A token verified (and cached) at the server it is for is still
	// refused at the next one.
	raw := mint(gw + "/mcp/files")
	if _, err := v.Verify(WithServerAudience(context.Background(), gw+"/mcp/files"), raw, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(WithServerAudience(context.Background(), gw+"/mcp/notes"), raw, cert); err == nil {
		t.Fatal("a token cached at server files was accepted at server notes")
	}
}

func agentCert(t *testing.T, id string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alpha"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestWithServerAudienceOnlyForThatKindOfServer(t *testing.T) {
	g := testGateway(t, "https://gw.example")
	cases := []struct{ path, want string }{
		{"/mcp/files", "https://gw.example/mcp/files"},
		{"/http/billing/v1/invoices/7", "https://gw.example/http/billing"},
		{"/http/files/x", ""},       // files is an MCP server
		{"/mcp/billing", ""},        // billing is an HTTP API
		{"/mcp/nothing-here", ""},   // not configured
		{"/mcp/files/x", ""},        // not a server name
		{"/.well-known/x", ""},      // not a server
		{"/mcp/files%2F..%2Fx", ""}, // not a server name
		{"/http/billing%2Fx/y", ""}, // not a server name
		{"/http/billing/../mcp/files", "https://gw.example/http/billing"}, // refused later as not canonical
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "https://127.0.0.1:9443"+c.path, nil)
		if got := serverAudience(g.withServerAudience(r).Context()); got != c.want {
			t.Errorf("%s: server audience %q, want %q", c.path, got, c.want)
		}
	}
}

// noBaselines: every agent is still learning.
var noBaselines = baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
	return baseline.Learn(agent, nil, baseline.DefaultConfig), nil
})
