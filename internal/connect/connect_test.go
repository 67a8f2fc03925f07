package connect_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/connect"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// sidecar is a Sidecar running in this process.
type sidecar struct {
	*connect.Sidecar
	log    *gatewaytest.LogBuffer
	cancel context.CancelFunc
	done   chan error

	once sync.Once
	err  error
}

// wait returns Run's result once it has returned.
func (s *sidecar) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	s.once.Do(func() {
		select {
		case s.err = <-s.done:
		case <-time.After(d):
			s.err = errors.New("the sidecar did not stop")
		}
	})
	return s.err
}

// start runs a sidecar for the agent in dir in front of e's gateway.
func start(t *testing.T, e *gatewaytest.Env, dir string, edit func(*connect.Config)) *sidecar {
	t.Helper()
	lb := &gatewaytest.LogBuffer{}
	cfg := connect.Config{Dir: dir, ServerURL: e.URL, GatewayURL: e.GatewayURL, Listen: "127.0.0.1:0",
		Resource: gatewaytest.Resource, Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if edit != nil {
		edit(&cfg)
	}
	sc, err := connect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sc.Listen(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sidecar{Sidecar: sc, log: lb, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		s.cancel()
		if err := s.wait(t, 10*time.Second); err != nil && !strings.Contains(err.Error(), "renewal refused") {
			t.Errorf("sidecar: %v", err)
		}
		if t.Failed() {
			t.Logf("sidecar log:\n%s", lb.String())
		}
	})
	return s
}

// plain is what an agent without Bulkhead support has: an HTTP client with
// no TLS and no token.
func plain() *http.Client { return &http.Client{} }

// withHeaders is a plain client that sends headers of its own on every
// request (a forged token, a cookie, proxy credentials).
func withHeaders(h map[string]string) *http.Client {
	return &http.Client{Transport: headerTransport(h)}
}

type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func events(t *testing.T, e *gatewaytest.Env, action string) []audit.Event {
	t.Helper()
	rows, err := e.Server.Store().Events(context.Background(), audit.Query{AfterSeq: -1, Actions: []string{action}})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func readFile(t *testing.T, cs *mcp.ClientSession, path string) (string, error) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": path}})
	if err != nil {
		return "", err
	}
	if res.IsError {
		return "", errors.New("tool error: " + gatewaytest.Text(res))
	}
	return gatewaytest.Text(res), nil
}

// post sends a raw MCP message through the sidecar.
func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := plain().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// An off-the-shelf MCP client, with no TLS and no token, reaches the
// gateway through the sidecar and gets exactly what the agent may do.
func TestSidecarMCP(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	sc := start(t, e, dir, nil)
	cs := gatewaytest.Connect(t, sc.URL()+"/mcp/files", plain())
	ctx := context.Background()

	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if strings.Join(names, ",") != "read_file" {
		t.Fatalf("visible tools = %v, want only read_file", names)
	}

	if got, err := readFile(t, cs, "/srv/docs/guide.md"); err != nil || got != "contents of /srv/docs/guide.md" {
		t.Fatalf("read_file: %q %v", got, err)
	}
	if got := e.Files.SawAuth.Load(); got != "Bearer "+gatewaytest.FilesSecret {
		t.Fatalf("upstream saw Authorization %q", got)
	}

	// An argument-based forbid: a JSON-RPC error naming the decision,
	// which the audit log holds with the policy that made it.
	_, err = readFile(t, cs, "/etc/passwd")
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Message != "denied by policy" {
		t.Fatalf("/etc/passwd: %v, want a JSON-RPC denial", err)
	}
	var data struct {
		DecisionID string `json:"decision_id"`
	}
	if json.Unmarshal(rpcErr.Data, &data) != nil || data.DecisionID == "" {
		t.Fatalf("the denial names no decision: %s", rpcErr.Data)
	}
	var found bool
	for _, ev := range events(t, e, "gateway.call_tool") {
		if ev.Detail["decision_id"] == data.DecisionID {
			found = ev.Decision == audit.Deny && strings.Join(ev.Reasons, ",") == "forbid-etc" &&
				ev.Actor.ID == "spiffe://bulkhead.local/agent/alpha"
		}
	}
	if !found {
		t.Fatalf("decision %s is not an audited forbid-etc denial of alpha", data.DecisionID)
	}

	// The local client's own credentials are dropped: with a forged token
	// (which the gateway would refuse) the calls still succeed, so what
	// the gateway saw was the sidecar's token.
	forged := withHeaders(map[string]string{"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30.", "Cookie": "session=x",
		"Proxy-Authorization": "Basic eDp4", "X-Forwarded-For": "203.0.113.9"})
	cs2 := gatewaytest.Connect(t, sc.URL()+"/mcp/files", forged)
	if got, err := readFile(t, cs2, "/srv/b"); err != nil || got != "contents of /srv/b" {
		t.Fatalf("read_file with a forged Authorization: %q %v", got, err)
	}
	// The same forged token sent to the gateway directly, over the agent's
	// own mTLS, is refused: the success above is the sidecar's doing.
	c := e.Client(dir)
	direct := client.NewHTTPClient(c.Source(), client.AuthorizeGateways(c.Source().ID().TrustDomain(), ""))
	req, _ := http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")
	resp, err := direct.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token straight to the gateway: %d", resp.StatusCode)
	}
}

// The gateway's HTTP routes are mirrored too.
func TestSidecarHTTPRoutes(t *testing.T) {
	billing := gatewaytest.StartHTTP(t)
	e := gatewaytest.Start(t, `  - name: billing
    http:
      url: `+billing.URL+`
      routes:
        - { name: invoices, method: GET, path: /v1/invoices }
        - { name: refunds, method: POST, path: /v1/refunds }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: X-Api-Key, secret: files-token }
`)
	dir, _ := e.Agent(t, "ops1", "ops")
	sc := start(t, e, dir, nil)
	hc := withHeaders(map[string]string{"Authorization": "Bearer forged", "Cookie": "x=1"})

	resp, err := hc.Get(sc.URL() + "/http/billing/v1/invoices?month=2026-11")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"path":"/v1/invoices"`) {
		t.Fatalf("GET invoices: %d %s", resp.StatusCode, b)
	}
	seen := billing.Last.Load().(gatewaytest.Seen)
	if seen.Query != "month=2026-11" || seen.Auth != "" || seen.Header.Get("X-Api-Key") != gatewaytest.FilesSecret || seen.Header.Get("Cookie") != "" {
		t.Fatalf("upstream saw %+v", seen)
	}
	// The gateway's policy answers pass through unchanged.
	resp, err = hc.Post(sc.URL()+"/http/billing/v1/refunds", "application/json", strings.NewReader(`{"amount":5}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "denied by policy") {
		t.Fatalf("POST refunds: %d %s", resp.StatusCode, b)
	}
}

// Requests the agent's own process would never send are refused before
// anything reaches the gateway.
func TestSidecarRefusesNonLocalRequests(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	sc := start(t, e, dir, nil)
	before := len(events(t, e, "gateway.mcp")) + len(events(t, e, "gateway.authenticate"))
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	cases := []struct {
		name, raw string
		status    int
		want      string
	}{
		{"absolute-form target", "GET http://127.0.0.1:1/mcp/files HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", 400, "not a forward proxy"},
		{"absolute-form to elsewhere", "GET https://evil.example/mcp/files HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400, "not a forward proxy"},
		{"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405, "CONNECT is refused"},
		{"DNS rebinding", "POST /mcp/files HTTP/1.1\r\nHost: rebind.evil.example:7070\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n" + ping, 403, "not a loopback name"},
		{"web page of another site", "POST /mcp/files HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n\r\n" + ping, 403, "not a loopback origin"},
		{"no-cors GET from another site", "GET /http/billing/v1/invoices HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: cross-site\r\n\r\n", 403, "other sites"},
		{"local web page, cross-origin", "POST /mcp/files HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://localhost:3000\r\nSec-Fetch-Site: same-site\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n\r\n" + ping, 403, "cross-origin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", sc.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(b), c.want) {
				t.Fatalf("got %d %s, want %d containing %q", resp.StatusCode, b, c.status, c.want)
			}
		})
	}
	if after := len(events(t, e, "gateway.mcp")) + len(events(t, e, "gateway.authenticate")); after != before {
		t.Fatal("a refused local request reached the gateway")
	}
}

// After a rotation the sidecar presents the new certificate with a token
// bound to it, including on an MCP session whose stream was opened with
// the old one.
func TestSidecarFollowsSVIDRotation(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	fake := clock.NewFake(time.Now())
	sc := start(t, e, dir, func(c *connect.Config) { c.Clock = fake })
	cs := gatewaytest.Connect(t, sc.URL()+"/mcp/files", plain())
	if _, err := readFile(t, cs, "/srv/a"); err != nil {
		t.Fatal(err)
	}
	src, err := client.LoadSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := src.Leaf()

	waitFor(t, "the rotator to wait for the half-life", func() bool { return fake.Waiters() > 0 })
	half := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2)
	fake.Advance(half.Sub(fake.Now()))
	var leaf []byte
	waitFor(t, "the SVID to rotate", func() bool {
		s, err := client.LoadSource(dir)
		if err != nil || s.Leaf().Equal(old) {
			return false
		}
		leaf = s.Leaf().Raw
		return true
	})
	waitFor(t, "the rotator to wait for the next half-life", func() bool { return fake.Waiters() > 0 })

	allowed := func() int {
		n := 0
		for _, ev := range events(t, e, "gateway.call_tool") {
			if ev.Decision == audit.Allow {
				n++
			}
		}
		return n
	}
	before := allowed()
	// The same session: its stream still runs on a connection made with
	// the old certificate.
	if _, err := readFile(t, cs, "/srv/after-rotation"); err != nil {
		t.Fatalf("call on the open session after rotation: %v", err)
	}
	cs2 := gatewaytest.Connect(t, sc.URL()+"/mcp/files", plain())
	if _, err := readFile(t, cs2, "/srv/new-session"); err != nil {
		t.Fatalf("call on a new session after rotation: %v", err)
	}
	if got := allowed(); got != before+2 {
		t.Fatalf("%d calls allowed after rotation, want 2", got-before)
	}
	// The token the gateway accepted was issued for the new certificate
	// (the gateway checks cnf against the certificate it was shown).
	var last string
	for _, ev := range events(t, e, "token.issue") {
		if ev.Actor.ID == "spiffe://bulkhead.local/agent/alpha" {
			last = ev.Detail["cnf_x5t_s256"]
		}
	}
	if last != thumbprint(leaf) {
		t.Fatalf("the last token is bound to %s, want the new certificate %s", last, thumbprint(leaf))
	}
	if !strings.Contains(sc.log.String(), "new gateway connections use the rotated SVID") {
		t.Fatal("the rotation was not logged")
	}
}

// After the agent is revoked its requests fail with a clear error, and
// the next renewal, which the control plane refuses, stops the sidecar.
func TestSidecarAfterRevocation(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	fake := clock.NewFake(time.Now())
	sc := start(t, e, dir, func(c *connect.Config) { c.Clock = fake })
	const ping = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	if status, body := post(t, sc.URL()+"/mcp/files", ping); status == http.StatusBadGateway {
		t.Fatalf("before revocation: %d %s", status, body)
	}
	if _, err := e.Operator.RevokeAgent(context.Background(), "alpha", "compromised"); err != nil {
		t.Fatal(err)
	}
	// First the gateway refuses the cached token, then the control plane
	// refuses a new one; each answer says why.
	var codes []string
	waitFor(t, "a refusal from the control plane", func() bool {
		status, body := post(t, sc.URL()+"/mcp/files", ping)
		if status != http.StatusBadGateway {
			return false
		}
		var e struct{ Code, Error string }
		if json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, "revoked") {
			t.Fatalf("after revocation: %d %s", status, body)
		}
		t.Logf("%s: %s", e.Code, e.Error)
		codes = append(codes, e.Code)
		return e.Code == "token_unavailable"
	})
	if strings.Join(codes, ",") != "gateway_refused_credentials,token_unavailable" {
		t.Fatalf("refusals %v, want the gateway's and then the control plane's", codes)
	}
	for _, want := range []string{"the gateway refused the agent's credentials", "no access token; request not forwarded"} {
		if !strings.Contains(sc.log.String(), want) {
			t.Fatalf("not logged: %q", want)
		}
	}
	// An MCP client cannot open a session.
	cl := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "test"}, nil)
	if cs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: sc.URL() + "/mcp/files", HTTPClient: plain(), MaxRetries: -1}, nil); err == nil {
		cs.Close()
		t.Fatal("an MCP session opened after revocation")
	}

	// The renewal is refused for good, and the sidecar stops.
	waitFor(t, "the rotator to wait", func() bool { return fake.Waiters() > 0 })
	fake.Advance(time.Hour)
	err := sc.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "renewal refused") {
		t.Fatalf("Run returned %v, want the refused renewal", err)
	}
	if c, err := net.Dial("tcp", sc.Addr()); err == nil {
		c.Close()
		t.Fatal("the sidecar still listens after its identity was revoked")
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	ok := connect.Config{Dir: t.TempDir(), ServerURL: "https://127.0.0.1:8443", GatewayURL: "https://127.0.0.1:9443", Logger: logger}
	cases := []struct {
		name string
		edit func(*connect.Config)
		want string
	}{
		{"no dir", func(c *connect.Config) { c.Dir = "" }, "connect: the agent's credential directory is required"},
		{"no server", func(c *connect.Config) { c.ServerURL = "" }, "connect: the control plane URL is required"},
		{"no gateway", func(c *connect.Config) { c.GatewayURL = "" }, "connect: the gateway URL is required"},
		{"no logger", func(c *connect.Config) { c.Logger = nil }, "connect: a logger is required"},
		{"plain http gateway", func(c *connect.Config) { c.GatewayURL = "http://127.0.0.1:9443" }, "must use https"},
		{"relative gateway", func(c *connect.Config) { c.GatewayURL = "/mcp" }, "is not an absolute URL"},
		{"gateway with a query", func(c *connect.Config) { c.GatewayURL = "https://gw.test/?x=1" }, "must not carry"},
		{"gateway with user info", func(c *connect.Config) { c.GatewayURL = "https://u:p@gw.test" }, "must not carry"},
		{"all interfaces", func(c *connect.Config) { c.Listen = "0.0.0.0:7070" }, `refusing to listen on "0.0.0.0:7070"`},
		{"all interfaces, no host", func(c *connect.Config) { c.Listen = ":7070" }, `refusing to listen on ":7070"`},
		{"IPv6 any", func(c *connect.Config) { c.Listen = "[::]:7070" }, "refusing to listen"},
		{"LAN address", func(c *connect.Config) { c.Listen = "192.168.1.10:7070" }, "refusing to listen"},
		{"host name", func(c *connect.Config) { c.Listen = "agent.example:7070" }, "refusing to listen"},
		{"no port", func(c *connect.Config) { c.Listen = "127.0.0.1" }, "listen address"},
		{"no credentials", nil, "connect: agent credentials in"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			if c.edit != nil {
				c.edit(&cfg)
			}
			_, err := connect.New(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want %q", err, c.want)
			}
		})
	}
}

// A gateway whose resource is not the tokens' audience is found at start,
// not on every request.
func TestListenChecksTheGatewaysResource(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	if _, err := e.Operator.AddResource(context.Background(), "https://other.bulkhead.test", nil); err != nil {
		t.Fatal(err)
	}
	sc, err := connect.New(connect.Config{Dir: dir, ServerURL: e.URL, GatewayURL: e.GatewayURL, Listen: "127.0.0.1:0",
		Resource: "https://other.bulkhead.test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = sc.Listen(context.Background())
	if err == nil || !strings.Contains(err.Error(), `is resource "`+gatewaytest.Resource+`"`) {
		t.Fatalf("Listen: %v", err)
	}
	// An unregistered resource: no token at all.
	sc, err = connect.New(connect.Config{Dir: dir, ServerURL: e.URL, GatewayURL: e.GatewayURL, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Listen(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot obtain an access token for "+e.GatewayURL) {
		t.Fatalf("Listen with the default resource: %v", err)
	}
	// A gateway pinned by another name is refused at the TLS handshake.
	sc, err = connect.New(connect.Config{Dir: dir, ServerURL: e.URL, GatewayURL: e.GatewayURL, Listen: "127.0.0.1:0",
		Resource: gatewaytest.Resource, GatewayName: "not-this-one", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/mcp/files", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Host = "127.0.0.1"
	sc.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "gateway_unreachable") {
		t.Fatalf("pinned to another gateway: %d %s", rec.Code, rec.Body.String())
	}
}
