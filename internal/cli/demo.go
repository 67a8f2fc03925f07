package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/examples/quickstart"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/server"
)

// demoResource is the demo gateway's token audience.
const demoResource = "https://gateway.demo.bulkhead.local"

func (e *env) demoCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole quickstart in one process and narrate it",
		Long: `Start a control plane, a gateway and the quickstart's docs MCP server on
loopback, then: enroll an agent, list its tools (filtered), make an allowed
call and two denied ones, show the records, revoke the agent, and verify the
audit log. Everything stays in --dir (a new temporary directory by default)
for you to inspect afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				var err error
				if dir, err = os.MkdirTemp("", "bulkhead-demo-"); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			return e.runDemo(cmd.Context(), dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the demo's data (default: a new temporary directory)")
	return cmd
}

type narrator struct {
	e    *env
	step int
}

func (n *narrator) say(format string, args ...any) {
	n.step++
	fmt.Fprintf(n.e.stdout, "\n%d. %s\n", n.step, fmt.Sprintf(format, args...))
}

func (n *narrator) detail(format string, args ...any) {
	fmt.Fprintf(n.e.stdout, "   %s\n", fmt.Sprintf(format, args...))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *env) runDemo(parent context.Context, dir string) error {
	n := &narrator{e: e}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	fmt.Fprintf(e.stdout, "Bulkhead demo — everything lives in %s\n", dir)

	// The upstream: the quickstart's docs MCP server, with an API key only
	// the gateway will hold.
	apiKey := "docs-" + randomHex(12)
	toolLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	toolSrv := &http.Server{Handler: quickstart.ToolServer(apiKey), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = toolSrv.Serve(toolLn) }()
	defer toolSrv.Close()

	gwCfg, err := fs.ReadFile(quickstart.Files, "gateway.yaml")
	if err != nil {
		return err
	}
	gw := strings.NewReplacer("http://127.0.0.1:3001/mcp", "http://"+toolLn.Addr().String()+"/mcp",
		"listen: 127.0.0.1:9443", "listen: 127.0.0.1:0\nresource: "+demoResource).Replace(string(gwCfg))
	gwPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(gwPath, []byte(gw), 0o600); err != nil {
		return err
	}

	n.say("Start the control plane (CA, token service, policy, audit log) and the gateway")
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", GatewayConfig: gwPath,
		TrustDomain: spiffeid.RequireTrustDomainFromString(server.DefaultTrustDomain)}, clock.Real{}, e.logger)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	url, gwURL := "https://"+srv.Addr(), "https://"+srv.GatewayAddr()
	n.detail("control plane %s, gateway %s, docs MCP server http://%s/mcp", url, gwURL, toolLn.Addr())
	op, err := client.NewFromDir(url, srv.OperatorDir())
	if err != nil {
		return err
	}
	if err := waitHealthy(ctx, op, url); err != nil {
		return err
	}

	n.say("As the operator: store the upstream API key, apply policies and the tool catalog")
	if _, err := op.SetSecret(ctx, "docs-api-key", []byte(apiKey)); err != nil {
		return err
	}
	pol, err := fs.ReadFile(quickstart.Files, "policies/quickstart.cedar")
	if err != nil {
		return err
	}
	v, err := op.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: []api.PolicyFile{{Name: "quickstart.cedar", Content: string(pol)}}, Description: "demo"})
	if err != nil {
		return err
	}
	catRaw, err := fs.ReadFile(quickstart.Files, "tools.yaml")
	if err != nil {
		return err
	}
	cat, err := policy.ParseCatalog("tools.yaml", catRaw)
	if err != nil {
		return err
	}
	if _, err := op.ApplyTools(ctx, policy.CatalogJSON(cat)); err != nil {
		return err
	}
	n.detail("secret docs-api-key stored sealed; policy version %d (%d policies); catalog: docs/search, docs/read_page, docs/delete_page (high sensitivity)", v.Version, v.Policies)

	n.say("Register an agent and enroll it with a one-time join token (its key is generated on its side)")
	const agent = "research-agent"
	if _, err := op.CreateAgent(ctx, agent, 0, "mcp"); err != nil {
		return err
	}
	if _, err := op.AddAgentRole(ctx, agent, "reader"); err != nil {
		return err
	}
	tok, err := op.JoinToken(ctx, agent, 0)
	if err != nil {
		return err
	}
	agentDir := filepath.Join(dir, "agents", agent)
	svid, err := client.Enroll(ctx, url, tok.Token, agentDir)
	if err != nil {
		return err
	}
	n.detail("%s enrolled: SVID in %s, expires %s", svid.ID, agentDir, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))

	n.say("Connect the agent to the gateway with the official MCP client: mTLS with its SVID, a 5-minute token bound to it")
	ac, err := client.NewFromDir(url, agentDir)
	if err != nil {
		return err
	}
	// GatewayClient keeps each request's token bound to the certificate of
	// the connection it travels on, across SVID rotations.
	hc, err := ac.GatewayClient(client.GatewayOptions{Resource: demoResource})
	if err != nil {
		return err
	}
	hc.Timeout = 30 * time.Second
	session, err := mcp.NewClient(&mcp.Implementation{Name: agent, Version: "demo"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: gwURL + "/mcp/docs", HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return fmt.Errorf("connect through the gateway: %w", err)
	}
	defer session.Close()

	list, err := session.ListTools(ctx, nil)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range list.Tools {
		names = append(names, t.Name)
	}
	n.say("tools/list, filtered to what the agent may call: %s (delete_page is hidden)", strings.Join(names, ", "))

	call := func(tool string, args map[string]any) (string, error) {
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			return "", err
		}
		var b strings.Builder
		for _, c := range res.Content {
			if t, ok := c.(*mcp.TextContent); ok {
				b.WriteString(t.Text)
			}
		}
		return b.String(), nil
	}
	out, err := call("search", map[string]any{"query": "token"})
	if err != nil {
		return fmt.Errorf("allowed call failed: %w", err)
	}
	n.say("Allowed: search(query=token) → %q", out)
	n.detail("the upstream received the API key from the gateway; the agent never saw it")

	_, err = call("read_page", map[string]any{"path": "/private/salaries.md"})
	n.say("Denied by an argument rule (forbid-private-paths): read_page(path=/private/salaries.md) → %v", err)
	_, err = call("delete_page", map[string]any{"path": "/guides/enroll.md"})
	n.say("Denied by a guardrail (forbid-high-sensitivity): delete_page → %v", err)

	n.say("The records — every decision, with who, what, which policies, and a digest of the arguments")
	rows, err := srv.Store().Events(ctx, audit.Query{AfterSeq: -1})
	if err != nil {
		return err
	}
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil || !strings.HasPrefix(ev.Action, "gateway.") {
			continue
		}
		n.detail("#%-4d %-18s %-6s %-28s %-26s %s decision %s", ev.Seq, ev.Action, ev.Decision, ev.Target, strings.Join(ev.Reasons, ","), ev.Actor.ID, ev.Detail["decision_id"])
	}
	n.detail("a refused agent is told its decision id (in the JSON-RPC error's data); 'bulkhead audit search --decision-id ID' finds the records")

	n.say("Revoke the agent: its certificates go on the CRL and the gateway drops it")
	start := time.Now()
	if _, err := op.RevokeAgent(ctx, agent, "demo: key presumed stolen"); err != nil {
		return err
	}
	var refusal error
	for refusal == nil && time.Since(start) < 5*time.Second {
		_, refusal = call("search", map[string]any{"query": "token"})
		if refusal == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if refusal == nil {
		return errors.New("the revoked agent was still served after 5s")
	}
	n.detail("first refused call %s after the revocation: %v", time.Since(start).Round(time.Millisecond), refusal)

	n.say("Stop, then verify the audit log against its signed checkpoints")
	_ = session.Close()
	cancel()
	if err := <-served; err != nil {
		return err
	}
	e.dataDir = dir
	verifier, err := e.verifierFor("")
	if err != nil {
		return err
	}
	if err := e.verifyStore(parent, "", verifier, nil, false, false); err != nil {
		return err
	}

	fmt.Fprintf(e.stdout, `
Where to look next:
  bulkhead audit verify --data-dir %[1]s      # the log, checked offline
  bulkhead serve --data-dir %[1]s             # start it again, then in another shell:
  bulkhead audit search --data-dir %[1]s --decision deny
  examples/quickstart/   the gateway configuration, policies and catalog used here
  docs/                  identity, tokens, policy, elevation, audit, gateway, benchmarks
`, dir)
	return nil
}

func waitHealthy(ctx context.Context, c *client.Client, url string) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		if resp, err := c.HTTPClient().Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("control plane did not become healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
