package gateway_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// The gateway's behaviour is tested here through the interfaces it
// consumes (Decider, Recorder, KeySource, ...), with a real CA, real mTLS
// on loopback, real ES256 tokens and the official MCP SDK's server as the
// upstream; no control plane. internal/server keeps the end-to-end
// stories.

const (
	harnessIssuer   = "https://control.bulkhead.test"
	harnessResource = "https://gateway.bulkhead.test"
	harnessSecret   = "files-secret"
)

var harnessTD = spiffeid.RequireTrustDomainFromString("bulkhead.local")

// harness is one gateway in front of a FilesServer.
type harness struct {
	URL   string
	Files *gatewaytest.FilesServer
	Rec   *recorder
	Dec   *decider
	G     *gateway.Gateway
	Rev   *gateway.Revocations

	ca     *ca.Authority
	signer jose.Signer
	clock  clock.Clock
}

// recorder is the gateway's audit log: it keeps what it commits, and can
// be made to fail or to hold every record until released.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	fail   error
	hold   chan struct{} // non-nil: Record waits for it to close
	// started receives the action of every record as it begins.
	started chan string
}

func (r *recorder) Record(ctx context.Context, ev audit.Event) (audit.Event, error) {
	r.mu.Lock()
	fail, hold, started := r.fail, r.hold, r.started
	r.mu.Unlock()
	if started != nil {
		started <- ev.Action
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return audit.Event{}, ctx.Err()
		}
	}
	if fail != nil {
		return audit.Event{}, fail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ev.Seq = int64(len(r.events) + 1)
	r.events = append(r.events, ev)
	return ev, nil
}

// set changes how the next records behave.
func (r *recorder) set(fail error, hold chan struct{}, started chan string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail, r.hold, r.started = fail, hold, started
}

// all returns the events recorded, in order.
func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

// actions lists the actions recorded, in order.
func (r *recorder) actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, ev := range r.events {
		out[i] = ev.Action + ":" + string(ev.Decision)
	}
	return out
}

// decider allows every call, and declares read-only the tools named in
// readOnly and the sensitivity of those in sensitivity, as a catalog
// would.
type decider struct {
	readOnly    map[string]bool
	sensitivity map[string]string
	// denied tools are denied; at a risk of denyAt or more (when set),
	// everything is.
	denied map[string]bool
	denyAt int
	// outsideTasks denies everything decided outside an open task.
	outsideTasks bool
	// failing makes every decision fail (the control plane unreachable);
	// failed counts those.
	failing atomic.Bool
	failed  atomic.Int64
	// needGrant allows a tool ("" for a server's own resource) only with
	// the named grant ("MANIFEST/TRIGGER") in force, as its trigger's
	// permit.
	needGrant map[string]string
	// baselines are the agents' learned baselines (default: none yet).
	baselines baseline.Source
	// risks sees the risk of each decision.
	mu    sync.Mutex
	risks []gateway.Decision
}

func (d *decider) Decide(_ context.Context, q gateway.Decision) (policy.Decision, error) {
	_, tool, _ := strings.Cut(string(q.Resource.ID), "/")
	if d.failing.Load() {
		d.failed.Add(1)
		return policy.Decision{}, errors.New("control plane unreachable")
	}
	d.mu.Lock()
	d.risks = append(d.risks, q)
	denied := d.denied[tool] || (d.denyAt > 0 && q.Risk >= d.denyAt) || (d.outsideTasks && q.Task == "")
	d.mu.Unlock()
	if denied {
		return policy.Decision{ID: "d-" + tool, Version: 1}, nil
	}
	if g := d.needGrant[tool]; g != "" {
		m, tr, _ := strings.Cut(g, "/")
		if !slices.Contains(q.Grants, g) {
			return policy.Decision{ID: "d-" + tool, Version: 1}, nil
		}
		return policy.Decision{ID: "d-" + tool, Allowed: true, Version: 1, Reasons: []string{elevation.TriggerPolicyID(m, tr)}}, nil
	}
	return policy.Decision{ID: "d-" + tool, Allowed: true, Version: 1, ReadOnly: d.readOnly[tool], Sensitivity: d.sensitivity[tool]}, nil
}

// deny denies tool from now on ("" is a server's own resource).
func (d *decider) deny(tool string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.denied == nil {
		d.denied = map[string]bool{}
	}
	d.denied[tool] = true
}

// decided returns the decisions asked for so far.
func (d *decider) decided() []gateway.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.risks)
}

func (d *decider) source() baseline.Source {
	if d.baselines != nil {
		return d.baselines
	}
	return baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
		return baseline.Learn(agent, nil, baseline.DefaultConfig), nil
	})
}

type keys struct{ pub crypto.PublicKey }

func (k keys) Key(_ context.Context, kid string) (any, bool) { return k.pub, kid == "k1" }

type secrets map[string]string

func (s secrets) Reveal(_ context.Context, name string) ([]byte, error) {
	v, ok := s[name]
	if !ok {
		return nil, errors.New("no such secret")
	}
	return []byte(v), nil
}

// startGateway starts a gateway on loopback in front of a FilesServer.
func startGateway(t *testing.T, dec *decider) *harness {
	t.Helper()
	return startGatewayWith(t, dec, "", nil)
}

// startGatewayWith is startGateway with more servers (YAML list items)
// and a task source.
func startGatewayWith(t *testing.T, dec *decider, servers string, tasks gateway.TaskSource) *harness {
	t.Helper()
	clk := clock.Real{}
	authority, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: harnessTD, Dir: t.TempDir(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: signKey},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	files := gatewaytest.StartFiles(t, "Bearer "+harnessSecret)
	cfg, err := gateway.ParseConfig([]byte(`listen: 127.0.0.1:0
resource: `+harnessResource+`
servers:
  - name: files
    mcp: { url: `+files.URL+` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files }
`+servers), nil)
	if err != nil {
		t.Fatal(err)
	}
	rev := gateway.NewRevocations(storetest.Logger(t))
	rev.SetReady()
	rec := &recorder{}
	g, err := gateway.New(cfg, gateway.Deps{
		Verifier:    &gateway.Verifier{Issuer: harnessIssuer, Audience: harnessResource, Keys: keys{signKey.Public()}, Clock: clk},
		Revocations: rev, Decider: dec, Audit: rec, Secrets: secrets{"files": harnessSecret},
		Budgets: &budget.Memory{}, Baselines: dec.source(), Clock: clk, Logger: storetest.Logger(t), AuthorizationServer: harnessIssuer, Tasks: tasks})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := leaf(authority, spiffeid.RequireFromPath(harnessTD, "/bulkhead/gateway/test"), net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(authority.Root())
	srv := httptest.NewUnstartedServer(g.Handler())
	srv.Config.ConnContext = gateway.ConnContext
	srv.Config.ConnState = g.ConnState
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pool, NextProtos: []string{"h2", "http/1.1"}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &harness{URL: srv.URL, Files: files, Rec: rec, Dec: dec, G: g, Rev: rev, ca: authority, signer: signer, clock: clk}
}

// leaf issues an SVID (key and chain) for id.
func leaf(a *ca.Authority, id spiffeid.ID, ips ...net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := a.SignSVID(ca.SVIDRequest{ID: id, PublicKey: key.Public(), TTL: time.Hour, IPs: ips})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, a.Intermediate().Raw}, PrivateKey: key, Leaf: cert}, nil
}

// agent returns an HTTP client for agent name: its SVID over mTLS, and a
// token bound to it on every request.
func (h *harness) agent(t *testing.T, name string) *http.Client {
	t.Helper()
	return h.agentIn(t, name, "")
}

// agentIn is agent with tokens for task.
func (h *harness) agentIn(t *testing.T, name, task string) *http.Client {
	t.Helper()
	id := spiffeid.RequireFromPath(harnessTD, "/agent/"+name)
	cert, err := leaf(h.ca, id)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Leaf.Raw)
	now := h.clock.Now()
	claims := token.Claims{Issuer: harnessIssuer, Subject: id.String(), ClientID: id.String(), Audience: jwt.Audience{harnessResource},
		Scope: "mcp", IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), ID: "jti-" + name,
		Cnf: &token.Confirmation{X5TS256: base64.RawURLEncoding.EncodeToString(sum[:])}, Task: task}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := h.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(h.ca.Root())
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}},
		ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: bearer{raw, tr}, Timeout: 30 * time.Second}
}

type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// mcpPost sends one JSON-RPC message to the files server through the
// gateway (MCP 2025-11-25, stateless: no session is needed for a call the
// SDK's server answers) and returns the status and body.
func (h *harness) mcpPost(hc *http.Client, sid, body string) (int, string, string, error) {
	return h.mcpPostTo(hc, "files", sid, body)
}

// mcpPostTo is mcpPost to another server.
func (h *harness) mcpPostTo(hc *http.Client, server, sid, body string) (int, string, string, error) {
	req, err := http.NewRequest(http.MethodPost, h.URL+"/mcp/"+server, strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Mcp-Session-Id"), err
}

// session opens an MCP session for hc.
func (h *harness) session(t *testing.T, hc *http.Client) string {
	t.Helper()
	return h.sessionTo(t, hc, "files")
}

// sessionTo opens an MCP session with server for hc.
func (h *harness) sessionTo(t *testing.T, hc *http.Client, server string) string {
	t.Helper()
	status, body, sid, err := h.mcpPostTo(hc, server, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if err != nil || status != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %s %v", status, body, err)
	}
	if status, body, _, err := h.mcpPostTo(hc, server, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil || status/100 != 2 {
		t.Fatalf("initialized: %d %s %v", status, body, err)
	}
	return sid
}
