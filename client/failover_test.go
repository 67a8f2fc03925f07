package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// pki is a trust domain with an agent's credential and TLS configurations
// for servers presenting the control plane's SVID or someone else's.
type pki struct {
	agent    *client.Source
	server   *tls.Config // the control plane's SPIFFE ID: any replica
	impostor *tls.Config // a valid SVID of the trust domain, but not the control plane's
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("failover.test")
	a, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: t.TempDir(), Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id spiffeid.ID) *x509svid.SVID {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := a.SignSVID(ca.SVIDRequest{ID: id, PublicKey: key.Public(), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, a.Intermediate()}, PrivateKey: key}
	}
	serverCfg := func(svid *x509svid.SVID) *tls.Config {
		cfg := tlsconfig.MTLSServerConfig(svid, a.X509Bundle(), tlsconfig.AuthorizeMemberOf(td))
		cfg.MinVersion = tls.VersionTLS13
		// httptest installs its own certificate when none is listed, and
		// without SNI (an IP address) Go serves Certificates[0].
		cfg.GetCertificate = nil
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{svid.Certificates[0].Raw, svid.Certificates[1].Raw},
			PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}}
		return cfg
	}
	return &pki{
		agent:    client.NewSource(issue(spiffeid.RequireFromPath(td, "/agent/alpha")), a.X509Bundle()),
		server:   serverCfg(issue(client.ServerID(td))),
		impostor: serverCfg(issue(spiffeid.RequireFromPath(td, "/agent/mallory"))),
	}
}

// replica is a control plane replica that counts requests and keeps the
// bodies it received.
type replica struct {
	*httptest.Server
	hits atomic.Int32
	mu   sync.Mutex
	body []string
}

// startReplica serves h (nil: a stand-in API answering GET with [] and
// anything else with {}) with cfg on addr ("": any port).
func startReplica(t *testing.T, cfg *tls.Config, addr string, h http.HandlerFunc) *replica {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if r.Method == http.MethodGet {
				_, _ = io.WriteString(w, "[]")
				return
			}
			_, _ = io.WriteString(w, "{}")
		}
	}
	r := &replica{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.body = append(r.body, string(b))
		r.mu.Unlock()
		r.hits.Add(1)
		h(w, req)
	}))
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.TLS = cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.Server = srv
	return r
}

func (r *replica) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.body...)
}

// down is the URL of a replica that is not running: dialing it is refused.
func down(t *testing.T, p *pki) string {
	r := startReplica(t, p.server, "", nil)
	r.Close()
	return r.URL
}

func newClient(t *testing.T, p *pki, urls ...string) *client.Client {
	t.Helper()
	c, err := client.New(strings.Join(urls, ","), p.agent)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func hits(rs ...*replica) []int32 {
	out := make([]int32, len(rs))
	for i, r := range rs {
		out[i] = r.hits.Load()
	}
	return out
}

func wantHits(t *testing.T, when string, got []int32, want ...int32) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: hits per replica %v, want %v", when, got, want)
		}
	}
}

// With the first replica down, calls go to the second, and keep going
// there once the first is back: the preference sticks until it fails.
func TestFailoverToTheNextReplicaAndStay(t *testing.T) {
	p := newPKI(t)
	ctx := context.Background()
	first := startReplica(t, p.server, "", nil)
	second := startReplica(t, p.server, "", nil)
	addr := first.Listener.Addr().String()
	first.Close()
	c := newClient(t, p, first.URL, second.URL)
	if got := c.Bases(); len(got) != 2 || got[0] != first.URL || got[1] != second.URL {
		t.Fatalf("Bases() = %v", got)
	}
	if c.Current() != first.URL {
		t.Fatalf("Current() = %s before any request, want the first", c.Current())
	}
	if c.TLSConfig() == nil {
		t.Fatal("no TLS config")
	}

	if _, err := c.ListAgents(ctx); err != nil {
		t.Fatalf("with the first replica down: %v", err)
	}
	wantHits(t, "first down", hits(second), 1)
	if c.Current() != second.URL {
		t.Fatalf("Current() = %s, want the second", c.Current())
	}

	// The first comes back on the same address; the second keeps the calls.
	back := startReplica(t, p.server, addr, nil)
	for range 3 {
		if _, err := c.ListAgents(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantHits(t, "first back", hits(back, second), 0, 4)

	// The second goes down: round to the first again.
	second.Close()
	if _, err := c.ListAgents(ctx); err != nil {
		t.Fatalf("with the second replica down: %v", err)
	}
	wantHits(t, "second down", hits(back), 1)
	if c.Current() != first.URL {
		t.Fatalf("Current() = %s, want the first", c.Current())
	}

	// Every replica down: the error names each.
	back.Close()
	_, err := c.ListAgents(ctx)
	if err == nil || !strings.Contains(err.Error(), "no control plane replica answered") ||
		!strings.Contains(err.Error(), first.Listener.Addr().String()) || !strings.Contains(err.Error(), second.Listener.Addr().String()) {
		t.Fatalf("with every replica down: %v", err)
	}
}

// A request with a body is retried elsewhere only if it certainly never
// reached the failed replica; in every case the next request goes to the
// other replica.
func TestFailoverOfRequestsWithABody(t *testing.T) {
	body, _ := json.Marshal(api.CreateAgentRequest{Name: "alpha", Scopes: []string{"read"}})
	hangUp := func(w http.ResponseWriter, _ *http.Request) {
		// The request was read whole; the connection dies before the
		// answer, so the replica may have acted on it.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	createAgent := func(c *client.Client) error {
		_, err := c.CreateAgent(context.Background(), "alpha", 0, "read")
		return err
	}
	post := func(r io.Reader) func(c *client.Client) error {
		return func(c *client.Client) error {
			resp, err := c.HTTPClient().Post(c.Bases()[0]+"/v1/agents", "application/json", r)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		}
	}
	tests := []struct {
		name string
		// first starts the first replica; nil hits means it cannot count.
		first   func(t *testing.T, p *pki) (url string, hits *atomic.Int32)
		send    func(c *client.Client) error
		retried bool
	}{
		{name: "dial error, API call", first: func(t *testing.T, p *pki) (string, *atomic.Int32) { return down(t, p), nil },
			send: createAgent, retried: true},
		{name: "dial error, replayable body", first: func(t *testing.T, p *pki) (string, *atomic.Int32) { return down(t, p), nil },
			send: post(strings.NewReader(string(body))), retried: true},
		{name: "TLS handshake refused (not the control plane)", first: func(t *testing.T, p *pki) (string, *atomic.Int32) {
			r := startReplica(t, p.impostor, "", nil)
			return r.URL, &r.hits
		}, send: createAgent, retried: true},
		{name: "dial error, body that cannot be replayed", first: func(t *testing.T, p *pki) (string, *atomic.Int32) { return down(t, p), nil },
			send: post(io.NopCloser(strings.NewReader(string(body)))), retried: false},
		{name: "connection lost after sending", first: func(t *testing.T, p *pki) (string, *atomic.Int32) {
			r := startReplica(t, p.server, "", hangUp)
			return r.URL, &r.hits
		}, send: createAgent, retried: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			firstURL, firstHits := tt.first(t, p)
			second := startReplica(t, p.server, "", nil)
			c := newClient(t, p, firstURL, second.URL)

			err := tt.send(c)
			if tt.retried {
				if err != nil {
					t.Fatalf("not retried on the second replica: %v", err)
				}
				if got := second.bodies(); len(got) != 1 || got[0] != string(body) {
					t.Fatalf("the second replica received %q, want %q", got, body)
				}
			} else {
				if err == nil {
					t.Fatal("no error: the request was sent twice")
				}
				wantHits(t, "not retried", hits(second), 0)
			}
			wantFirst := int32(1) // it got the request, which is why it was not retried
			if tt.retried {
				wantFirst = 0
			}
			if firstHits != nil && firstHits.Load() != wantFirst {
				t.Fatalf("the first replica handled %d requests", firstHits.Load())
			}
			if c.Current() != second.URL {
				t.Fatalf("Current() = %s after a failure, want the second replica", c.Current())
			}
			before := second.hits.Load()
			if _, err := c.ListAgents(context.Background()); err != nil {
				t.Fatal(err)
			}
			if second.hits.Load() != before+1 || (firstHits != nil && firstHits.Load() > 1) {
				t.Fatal("the next request did not go to the second replica")
			}
		})
	}
}

// Concurrent failures on the same replica move the preference once, not
// past the next replica.
func TestFailoverConcurrent(t *testing.T) {
	p := newPKI(t)
	r2 := startReplica(t, p.server, "", nil)
	r3 := startReplica(t, p.server, "", nil)
	c := newClient(t, p, down(t, p), r2.URL, r3.URL)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			_, err := c.ListAgents(context.Background())
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantHits(t, "concurrent", hits(r2, r3), 32, 0)
	if c.Current() != r2.URL {
		t.Fatalf("Current() = %s, want the second replica", c.Current())
	}
}

// A canceled request is the caller's doing, not the replica's.
func TestFailoverIgnoresCancellation(t *testing.T) {
	p := newPKI(t)
	reached := make(chan struct{}, 1)
	r1 := startReplica(t, p.server, "", func(w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		<-r.Context().Done()
	})
	r2 := startReplica(t, p.server, "", nil)
	c := newClient(t, p, r1.URL, r2.URL)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-reached
		cancel()
	}()
	if _, err := c.ListAgents(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled call: %v", err)
	}
	if c.Current() != r1.URL || r2.hits.Load() != 0 {
		t.Fatalf("a canceled call moved the preference to %s", c.Current())
	}
}

func TestServerURLLists(t *testing.T) {
	p := newPKI(t)
	for _, tt := range []struct {
		in   string
		want string // error substring, or the bases joined by commas
		ok   bool
	}{
		{in: "", want: "no server URL"},
		{in: " , ", want: `server URL #1 of " , " is empty`},
		{in: "https://a,,https://b", want: `server URL #2 of "https://a,,https://b" is empty`},
		{in: "https://a,", want: "#2"},
		{in: "http://a", want: `"http://a" must use https`},
		{in: "https://a,http://b", want: `"http://b" must use https`},
		{in: "https://a,b:8443", want: `"b:8443" is not an absolute URL`},
		{in: "https://a,https://a", want: `"https://a" repeats "https://a"`},
		{in: "https://a:8443,https://a:8443/", want: `repeats "https://a:8443"`},
		{in: "https://A,https://a:443", want: `"https://a:443" repeats "https://A"`},
		{in: "https://a/cp,https://b/other", want: "same path"},
		{in: "https://a:8443/", want: "https://a:8443", ok: true},
		{in: " https://a:8443/ , https://b:8443,https://c/", want: "https://a:8443,https://b:8443,https://c", ok: true},
	} {
		c, err := client.New(tt.in, p.agent)
		if !tt.ok {
			if err == nil || !strings.HasPrefix(err.Error(), "client: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%q) = %v, want an error with %q", tt.in, err, tt.want)
			}
			if _, err := client.Enroll(context.Background(), tt.in, "bhj1.x.y", t.TempDir()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Enroll(%q) = %v, want an error with %q", tt.in, err, tt.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q): %v", tt.in, err)
			continue
		}
		if got := strings.Join(c.Bases(), ","); got != tt.want {
			t.Errorf("New(%q).Bases() = %s, want %s", tt.in, got, tt.want)
		}
		f, err := client.NewFailover(strings.Split(tt.in, ","), nil)
		if err != nil || strings.Join(f.Bases(), ",") != tt.want {
			t.Errorf("NewFailover(%q) = %v, %v", tt.in, f, err)
		}
	}
}

// Failover serves http.Clients of one's own, and leaves other hosts alone.
func TestNewFailoverForOtherClients(t *testing.T) {
	p := newPKI(t)
	r2 := startReplica(t, p.server, "", nil)
	c := newClient(t, p, down(t, p), r2.URL)
	other := startReplica(t, p.server, "", nil)
	// A stream client without a timeout, on a transport of its own.
	f, err := client.NewFailover(c.Bases(), &http.Transport{TLSClientConfig: c.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: f}
	for _, u := range []string{c.Bases()[0] + "/v1/events", other.URL + "/elsewhere"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
	}
	wantHits(t, "own client", hits(r2, other), 1, 1)
	if f.Current() != r2.URL || c.Current() != c.Bases()[0] {
		t.Fatal("failovers share their preference")
	}
}

// Enroll tries the replicas in order until one answers, and an answer is
// final even if it is a refusal.
func TestEnrollFailsOver(t *testing.T) {
	env := testenv.Start(t)
	p := newPKI(t)
	ctx := context.Background()
	tok := env.NewJoinToken("alpha")
	// Enrollment starts without a client certificate.
	tlsOnly := p.server.Clone()
	tlsOnly.ClientAuth, tlsOnly.VerifyPeerCertificate = tls.NoClientCert, nil
	refusing := startReplica(t, tlsOnly, "", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	_, err := client.Enroll(ctx, refusing.URL+","+env.URL, tok, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("enroll with a refusing first replica: %v", err)
	}
	// The token never reached the real control plane; after a replica
	// that is down, it does.
	svid, err := client.Enroll(ctx, down(t, p)+","+env.URL, tok, t.TempDir())
	if err != nil {
		t.Fatalf("enroll with the first replica down: %v", err)
	}
	if svid.ID.Path() != "/agent/alpha" {
		t.Fatalf("enrolled as %s", svid.ID)
	}
}
