package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	gwResource  = gatewaytest.Resource
	filesSecret = gatewaytest.FilesSecret
)

type gatewayEnv struct{ *gatewaytest.Env }

func startGateway(t *testing.T, extra string, opts ...testenv.Option) *gatewayEnv {
	return &gatewayEnv{gatewaytest.Start(t, extra, opts...)}
}

func (e *gatewayEnv) agentHTTP(t *testing.T, name, role string) (*http.Client, *client.Client) {
	_, c := e.Agent(t, name, role)
	return e.AgentHTTP(c), c
}

func (e *gatewayEnv) mcpSession(t *testing.T, hc *http.Client) *mcp.ClientSession {
	return e.MCP(t, hc, "files")
}

func textOf(r *mcp.CallToolResult) string { return gatewaytest.Text(r) }

func TestGatewayMCPEndToEnd(t *testing.T) {
	logs := &gatewaytest.LogBuffer{}
	e := startGateway(t, "", testenv.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	ctx := context.Background()
	hc, _ := e.agentHTTP(t, "alpha", "reader")
	cs := e.mcpSession(t, hc)

	// tools/list shows only what the reader may call.
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

	// An allowed call reaches the upstream, with the injected credential.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/docs/guide.md"}})
	if err != nil || res.IsError || textOf(res) != "contents of /srv/docs/guide.md" {
		t.Fatalf("allowed call: %v %+v", err, res)
	}
	if got := e.Files.SawAuth.Load(); got != "Bearer "+filesSecret {
		t.Fatalf("upstream saw Authorization %q", got)
	}

	// An argument-based forbid denies that call only.
	before := e.Files.Calls.Load()
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/etc/shadow"}})
	if err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("/etc call: %v", err)
	}
	// A tool outside the role is denied too, and the upstream never sees
	// either.
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": "/tmp/x", "content": "y"}})
	if err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("write_file: %v", err)
	}
	if e.Files.Calls.Load() != before {
		t.Fatal("a denied call reached the upstream")
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/ok"}})
	if err != nil || textOf(res) != "contents of /srv/ok" {
		t.Fatalf("a later allowed call: %v", err)
	}

	// The records: allow and deny, with the agent, the tool, the policy
	// ids and version, and a digest of the arguments.
	evs := events(t, e.Env.Env, "gateway.call_tool")
	var allow, deny int
	for _, ev := range evs {
		if ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Digests["arguments"] == "" || ev.Detail["policy_version"] == "0" || ev.Detail["decision_id"] == "" {
			t.Fatalf("incomplete decision record: %+v", ev)
		}
		switch ev.Decision {
		case audit.Allow:
			allow++
		case audit.Deny:
			deny++
			if ev.Target == `Tool::"files/read_file"` && strings.Join(ev.Reasons, ",") != "forbid-etc" {
				t.Fatalf("the /etc denial names %v", ev.Reasons)
			}
		}
	}
	if allow != 2 || deny != 2 {
		t.Fatalf("%d allow and %d deny records, want 2 and 2", allow, deny)
	}

	// The secret never reaches the agent, the logs or the audit log.
	rows, err := e.Server.Store().Events(ctx, audit.Query{AfterSeq: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if bytes.Contains(r.Body, []byte(filesSecret)) {
			t.Fatalf("the secret is in audit record %d: %s", r.Seq, r.Body)
		}
	}
	if strings.Contains(logs.String(), filesSecret) {
		t.Fatal("the secret is in the logs")
	}
	if !strings.Contains(logs.String(), "gateway") {
		t.Fatal("no gateway logs were captured; the check above proves nothing")
	}
}

func TestGatewayRefusesBadCallers(t *testing.T) {
	e := startGateway(t, `  - name: private
    mcp: { url: http://127.0.0.1:1/mcp }
    callers: ["spiffe://bulkhead.local/agent/billing-bot"]
`)
	hc, c := e.agentHTTP(t, "alpha", "reader")
	post := func(hc *http.Client, path, auth string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, e.GatewayURL+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	bare := client.NewHTTPClient(c.Source(), client.AuthorizeGateways(td, "")) // mTLS, no token
	resp, _ := post(bare, "/mcp/files", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// A token for another audience.
	if _, err := e.Operator.AddResource(context.Background(), "https://other-api.bulkhead.test", nil); err != nil {
		t.Fatal(err)
	}
	other, err := c.RequestToken(context.Background(), "https://other-api.bulkhead.test")
	if err != nil {
		t.Fatal(err)
	}
	resp, body := post(bare, "/mcp/files", "Bearer "+other.AccessToken)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not this gateway") {
		t.Fatalf("token for another audience: %d %s", resp.StatusCode, body)
	}
	// A valid agent calling a server whose callers exclude it.
	resp, body = post(hc, "/mcp/private", "")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "may not reach server private") {
		t.Fatalf("excluded caller: %d %s", resp.StatusCode, body)
	}
	// Another agent's token over alpha's certificate (a stolen token).
	betaHC, _ := e.agentHTTP(t, "beta", "reader")
	betaTok, err := betaHC.Transport.(*client.GatewayTransport).Token()
	if err != nil {
		t.Fatal(err)
	}
	resp, body = post(bare, "/mcp/files", "Bearer "+betaTok.AccessToken)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "bound to another certificate") {
		t.Fatalf("stolen token: %d %s", resp.StatusCode, body)
	}
	// No client certificate at all.
	resp, _ = post(publicClient(t, e.Server.BundlePEM()), "/mcp/files", "Bearer "+betaTok.AccessToken)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no certificate: %d", resp.StatusCode)
	}
	// The metadata is public.
	var md map[string]any
	getJSON(t, publicClient(t, e.Server.BundlePEM()), e.GatewayURL+"/.well-known/oauth-protected-resource", &md)
	if md["resource"] != gwResource || md["tls_client_certificate_bound_access_tokens"] != true {
		t.Fatalf("protected resource metadata = %v", md)
	}
	// A certificate from another CA (another trust domain, or a forged CA
	// claiming ours) does not get through the handshake.
	forgedCA, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: t.TempDir(), Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	key := p256(t)
	leaf, err := forgedCA.SignSVID(ca.SVIDRequest{ID: spiffeid.RequireFromPath(td, "/agent/alpha"), PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.Server.BundlePEM())
	forged := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost",
		InsecureSkipVerify: true, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, forgedCA.Intermediate().Raw}, PrivateKey: key}}}}}
	if resp, err := forged.Post(e.GatewayURL+"/mcp/files", "application/json", strings.NewReader(`{}`)); err == nil {
		resp.Body.Close()
		t.Fatalf("a forged agent certificate reached the gateway: %d", resp.StatusCode)
	}
	if n := len(events(t, e.Env.Env, "gateway.connect")); n != 1 {
		t.Fatalf("%d refused connections recorded, want 1", n)
	}
}

func TestGatewayHostileJSONRPC(t *testing.T) {
	e := startGateway(t, "")
	hc, _ := e.agentHTTP(t, "alpha", "reader")
	cs := e.mcpSession(t, hc)
	_ = cs
	before := e.Files.Calls.Load()
	cases := []struct{ name, body, want string }{
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]`, "batches are not accepted"},
		{"huge id", `{"jsonrpc":"2.0","id":"` + strings.Repeat("x", 500) + `","method":"ping"}`, `"id" must be`},
		{"float id", `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, `"id" must be`},
		{"deep nesting", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":` + strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat("}", 200) + `}}`, "nested deeper"},
		{"wrong types", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["read_file"]}}`, "name must be a string"},
		{"params not an object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,2]}`, `"params" must be an object`},
		{"unknown method", `{"jsonrpc":"2.0","id":1,"method":"admin/shutdown"}`, "not available through the gateway"},
		{"tool name path traversal", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"../vault/get_secret"}}`, "tool name"},
		{"not JSON", `{"jsonrpc":`, "unexpected end of input"},
		{"two values", `{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call"}`, "data after"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var msg struct {
				Error *struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			if json.Unmarshal(b, &msg) != nil || msg.Error == nil || !strings.Contains(msg.Error.Message, c.want) {
				t.Fatalf("got %d %s, want a JSON-RPC error containing %q", resp.StatusCode, b, c.want)
			}
		})
	}
	// Oversized body.
	req, _ := http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"p":"`+strings.Repeat("A", 2<<20)+`"}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("oversized body: %v", err)
	} else if resp != nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized body: %d", resp.StatusCode)
		}
	}
	if e.Files.Calls.Load() != before {
		t.Fatal("hostile input reached the upstream")
	}
}
