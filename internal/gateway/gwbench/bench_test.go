package gwbench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// allow decides yes without a PDP, for the layers below policy.
type allow struct{}

func (allow) Decide(context.Context, gateway.Decision) (policy.Decision, error) {
	return policy.Decision{ID: "bench", Allowed: true, Version: 1}, nil
}

// discard records nothing, for the layers below audit.
type discard struct{}

func (discard) Record(_ context.Context, ev audit.Event) (audit.Event, error) { return ev, nil }

type fixture struct {
	env    *gatewaytest.Env
	agent  *client.Client
	direct string
	cases  []benchCase
}

type benchCase struct {
	name string
	url  string
	// client makes a fresh HTTP client (one connection each in parallel
	// runs) for this case.
	client func() *http.Client
	// auth is the upstream credential for the direct and proxy cases.
	auth string
	// write calls write_file (effects: write, recorded before it is
	// forwarded) rather than read_file (effects: read in the example
	// catalog, recorded while it is forwarded).
	write bool
}

// call is the case's tools/call body and what its answer must contain.
func (c benchCase) call() (body, want string) {
	if c.write {
		return writeBody, "wrote 2 bytes"
	}
	return callBody, "contents of"
}

// build starts the control plane, the upstream and every case; they stop
// when b ends.
func build(b *testing.B) *fixture {
	env := gatewaytest.Start(b, "")
	// admin: it may write as well as read.
	_, agent := env.Agent(b, "bench", "admin")
	f := &fixture{env: env, agent: agent, direct: env.Files.URL}
	td := spiffeid.RequireTrustDomainFromString("bulkhead.local")
	upstream, _ := url.Parse(env.Files.URL)
	plain := func() *http.Client { return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}} }
	mtls := func(res string) func() *http.Client {
		return func() *http.Client {
			base := client.NewHTTPClient(agent.Source(), client.AuthorizeGateways(td, ""))
			tr := base.Transport.(*http.Transport)
			tr.MaxIdleConnsPerHost = 1
			if res == "" {
				return base
			}
			return &http.Client{Transport: &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, agent.TokenSource(res)), Base: tr}}
		}
	}
	serve := func(h http.Handler, tlsCfg *tls.Config) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: h, TLSConfig: tlsCfg, ConnContext: gateway.ConnContext}
		if tlsCfg == nil {
			go srv.Serve(ln)
			return "http://" + ln.Addr().String()
		}
		go srv.ServeTLS(ln, "", "")
		return "https://" + ln.Addr().String()
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(upstream); r.Out.URL.Path = upstream.Path }}
	// The in-process gateway's serving identity stands in for the other
	// mTLS cases' servers.
	gwSrc, err := client.LoadSource(env.DataDir + "/gateway/default")
	if err != nil {
		b.Fatal(err)
	}
	mtlsTLS := gateway.TLSConfig(tlsconfig.GetCertificate(gwSrc), nil)
	mtlsTLS.VerifyConnection = nil
	mtlsTLS.ClientAuth = tls.RequireAndVerifyClientCert
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.BundlePEM())
	mtlsTLS.ClientCAs = pool

	// Every call is scored against the agent's baseline, read from the
	// control plane's log as the in-process gateway reads it.
	baselines := baseline.StoredSource{Store: env.Server.Store(), Events: env.Server.Store(), Config: baseline.DefaultConfig,
		Clock: clock.Real{}, Logger: storetest.Logger(b)}
	layered := func(name string, dec gateway.Decider, rec gateway.Recorder, budgets budget.Store) string {
		metered := ""
		if budgets != nil {
			// Never spent in a run: the cost measured is the shared spend.
			metered = "\n    budget: { calls: 1000000000000 }"
		} else {
			budgets = &budget.Memory{}
		}
		cfg, err := gateway.ParseConfig([]byte(`listen: 127.0.0.1:0
name: bench-`+name+`
resource: https://bench-`+name+`.test
servers:
  - name: files
    mcp: { url: `+env.Files.URL+` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }`+metered+`
`), nil)
		if err != nil {
			b.Fatal(err)
		}
		rev := gateway.NewRevocations(storetest.Logger(b))
		rev.SetReady()
		g, err := gateway.New(cfg, gateway.Deps{
			Verifier:    &gateway.Verifier{Issuer: env.Server.Token().Issuer(), Audience: cfg.Resource, Keys: env.Server.Token(), Clock: clock.Real{}},
			Revocations: rev, Decider: dec, Audit: rec, Secrets: staticSecret(gatewaytest.FilesSecret),
			Budgets: budgets, Baselines: baselines, Clock: clock.Real{}, Logger: storetest.Logger(b), AuthorizationServer: env.URL})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := env.Operator.AddResource(context.Background(), cfg.Resource, nil); err != nil {
			b.Fatal(err)
		}
		return serve(g.Handler(), mtlsTLS) + "/mcp/files"
	}
	pdp := gateway.PDPDecider{PDP: env.Server.Policy()}
	f.cases = []benchCase{
		{name: "direct", url: env.Files.URL, client: plain, auth: "Bearer " + gatewaytest.FilesSecret},
		{name: "proxy", url: serve(proxy, nil) + upstream.Path, client: plain, auth: "Bearer " + gatewaytest.FilesSecret},
		{name: "proxy+mtls", url: serve(proxy, mtlsTLS) + upstream.Path, client: mtls(""), auth: "Bearer " + gatewaytest.FilesSecret},
		{name: "gateway+mtls+token", url: layered("token", allow{}, discard{}, nil), client: mtls("https://bench-token.test")},
		{name: "gateway+mtls+token+policy", url: layered("policy", pdp, discard{}, nil), client: mtls("https://bench-policy.test")},
		// The shared budget spend (one transaction per call) on each store.
		{name: "gateway+mtls+token+policy+budget-sqlite", url: layered("budget-sqlite", pdp, discard{}, env.Server.Store()), client: mtls("https://bench-budget-sqlite.test")},
		{name: "gateway+mtls+token+policy+budget-postgres", url: layered("budget-postgres", pdp, discard{}, storetest.Postgres.Open(b)), client: mtls("https://bench-budget-postgres.test")},
		// The full gateway as shipped: a read (effects: read, recorded
		// while forwarded) and a write (recorded first).
		{name: "gateway+mtls+token+policy+audit", url: env.GatewayURL + "/mcp/files", client: mtls(gatewaytest.Resource)},
		{name: "gateway+mtls+token+policy+audit-write", url: env.GatewayURL + "/mcp/files", client: mtls(gatewaytest.Resource), write: true},
	}
	return f
}

type staticSecret string

func (s staticSecret) Reveal(context.Context, string) ([]byte, error) { return []byte(s), nil }

const (
	initBody  = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`
	callBody  = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/docs/guide.md"}}}`
	writeBody = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/srv/docs/guide.md","content":"hi"}}}`
)

func post(hc *http.Client, u, auth, sid, body, want string) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) && sid != "" {
		return "", &httpError{resp.StatusCode, string(b)}
	}
	return resp.Header.Get("Mcp-Session-Id"), nil
}

type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string { return "status " + http.StatusText(e.status) + ": " + e.body }

// session opens an MCP session on hc.
func session(b *testing.B, c benchCase, hc *http.Client) string {
	sid, err := post(hc, c.url, c.auth, "", initBody, "")
	if err != nil || sid == "" {
		b.Fatalf("%s: initialize: %v", c.name, err)
	}
	if _, err := post(hc, c.url, c.auth, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, ""); err != nil {
		if he, ok := err.(*httpError); !ok || he.status != http.StatusAccepted {
			b.Fatalf("%s: initialized: %v", c.name, err)
		}
	}
	return sid
}

// BenchmarkGatewayLayers runs a tools/call through each case at 1 and 16
// connections.
func BenchmarkGatewayLayers(b *testing.B) {
	f := build(b)
	for _, conns := range []int{1, 16} {
		for _, c := range f.cases {
			b.Run(c.name+"/conns="+itoa(conns), func(b *testing.B) { run(b, c, conns) })
		}
	}
}

func itoa(n int) string {
	if n == 1 {
		return "1"
	}
	return "16"
}

func run(b *testing.B, c benchCase, conns int) {
	clients := make([]*http.Client, conns)
	sids := make([]string, conns)
	for i := range clients {
		clients[i] = c.client()
		sids[i] = session(b, c, clients[i])
	}
	body, want := c.call()
	lat := make([][]time.Duration, conns)
	var next sync.Mutex
	idx := 0
	b.ResetTimer()
	if conns == 1 {
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if _, err := post(clients[0], c.url, c.auth, sids[0], body, want); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			lat[0] = append(lat[0], time.Since(start))
		}
	} else {
		b.SetParallelism((conns + 1) / 2)
		b.RunParallel(func(pb *testing.PB) {
			next.Lock()
			me := idx % conns
			idx++
			next.Unlock()
			var mine []time.Duration
			for pb.Next() {
				start := time.Now()
				if _, err := post(clients[me], c.url, c.auth, sids[me], body, want); err != nil {
					b.Errorf("%s: %v", c.name, err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			next.Lock()
			lat[me] = append(lat[me], mine...)
			next.Unlock()
		})
	}
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}
