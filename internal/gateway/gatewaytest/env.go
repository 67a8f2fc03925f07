package gatewaytest

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/connect"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// Constants of the standard environment.
const (
	Resource    = "https://gateway.bulkhead.test"
	FilesSecret = "s3cret-files-token-never-for-agents"
)

// Env is a control plane with an in-process gateway in front of a real MCP
// server (FilesServer), with the example policies and tool catalog applied
// and the upstream credential stored as the secret files-token.
type Env struct {
	*testenv.Env
	Files      *FilesServer
	GatewayURL string
}

// repoRoot finds the repository from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Start runs the standard environment. extraServers is YAML appended to the
// gateway's servers list (indented as list items).
func Start(t testing.TB, extraServers string, opts ...testenv.Option) *Env {
	t.Helper()
	files := StartFiles(t, "Bearer "+FilesSecret)
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := `listen: 127.0.0.1:0
resource: ` + Resource + `
servers:
  - name: files
    mcp: { url: ` + files.URL + ` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
` + extraServers
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	opts = append(opts, testenv.WithConfig(func(c *server.Config) { c.GatewayConfig = cfg }))
	env := testenv.Start(t, opts...)
	Configure(t, env.Operator)
	return &Env{Env: env, Files: files, GatewayURL: "https://" + env.Server.GatewayAddr()}
}

// Configure gives a control plane, through its operator, what the
// environment's gateway needs: the files server's credential, the live
// policies (PolicyFiles) and the example tool catalog.
func Configure(t testing.TB, op *client.Client) {
	t.Helper()
	ctx := context.Background()
	if _, err := op.SetSecret(ctx, "files-token", []byte(FilesSecret)); err != nil {
		t.Fatal(err)
	}
	if _, err := op.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: PolicyFiles(t)}); err != nil {
		t.Fatal(err)
	}
	catalog, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "policies", "tools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := policy.ParseCatalog("tools.yaml", catalog)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.ApplyTools(ctx, policy.CatalogJSON(cat)); err != nil {
		t.Fatal(err)
	}
}

// PolicyFiles are the environment's live policies: the example guardrails
// and roles, and readers may list tools. Append to them to apply more.
func PolicyFiles(t testing.TB) []api.PolicyFile {
	t.Helper()
	live := filepath.Join(repoRoot(), "examples", "policies", "live")
	var pf []api.PolicyFile
	for _, f := range []string{"guardrails.cedar", "roles.cedar"} {
		b, err := os.ReadFile(filepath.Join(live, f))
		if err != nil {
			t.Fatal(err)
		}
		pf = append(pf, api.PolicyFile{Name: f, Content: string(b)})
	}
	return append(pf, api.PolicyFile{Name: "list.cedar", Content: `@id("reader-list")
permit (principal in Role::"reader", action == Action::"list_tools", resource);`})
}

// Agent registers and enrolls agent name with the "mcp" scope and the
// given role (if any), returning its credential directory and client.
func (e *Env) Agent(t testing.TB, name, role string) (string, *client.Client) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Operator.CreateAgent(ctx, name, 0, "mcp"); err != nil {
		t.Fatal(err)
	}
	if role != "" {
		if _, err := e.Operator.AddAgentRole(ctx, name, role); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := e.Operator.JoinToken(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if _, err := client.Enroll(ctx, e.URL, tok.Token, dir); err != nil {
		t.Fatal(err)
	}
	return dir, e.Client(dir)
}

// AgentHTTP is an agent's HTTP client for the gateway, as a Go agent would
// build it (client.GatewayClient): mTLS with its SVID, accepting only a
// Bulkhead gateway, and a bound token on every request.
func (e *Env) AgentHTTP(c *client.Client) *http.Client { return AgentHTTPFor(c, Resource) }

// AgentHTTPFor is AgentHTTP for a gateway with another resource URI.
func AgentHTTPFor(c *client.Client, resource string) *http.Client {
	hc, err := c.GatewayClient(client.GatewayOptions{Resource: resource})
	if err != nil {
		panic(err) // only an empty resource fails
	}
	hc.Timeout = 30 * time.Second
	return hc
}

// MCP opens an MCP session to server through the gateway with hc.
func (e *Env) MCP(t testing.TB, hc *http.Client, server string) *mcp.ClientSession {
	t.Helper()
	return Connect(t, e.GatewayURL+"/mcp/"+server, hc)
}

// Connect opens an MCP session at endpoint with the official SDK client.
func Connect(t testing.TB, endpoint string, hc *http.Client) *mcp.ClientSession {
	t.Helper()
	cl := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "test"}, nil)
	cs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("MCP connect to %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// Text concatenates a tool result's text.
func Text(r *mcp.CallToolResult) string {
	var out string
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			out += tc.Text
		}
	}
	return out
}

// Sidecar runs `bulkhead connect` for the agent whose credential is in dir,
// in front of the gateway, and returns its plain-HTTP URL on loopback: what
// an agent in any language talks to.
func (e *Env) Sidecar(t testing.TB, dir string) string {
	t.Helper()
	sc, _ := e.StartSidecar(t, dir)
	return sc.URL()
}

// StartSidecar is Sidecar, returning the sidecar and its log (written to
// the test's output if it fails). It stops at t.Cleanup.
func (e *Env) StartSidecar(t testing.TB, dir string) (*connect.Sidecar, *LogBuffer) {
	t.Helper()
	lb := &LogBuffer{}
	sc, err := connect.New(connect.Config{Dir: dir, ServerURL: e.URL, GatewayURL: e.GatewayURL, Listen: "127.0.0.1:0",
		Resource: Resource, Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sc.Listen(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sidecar: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the sidecar did not stop")
		}
		if t.Failed() {
			t.Logf("sidecar log:\n%s", lb.String())
		}
	})
	return sc, lb
}
