package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox/sandboxtest"
)

// The official filesystem MCP server (npm @modelcontextprotocol/server-
// filesystem), misconfigured to allow the whole filesystem ("/"), runs
// sandboxed behind the gateway over stdio. An agent the policy lets use it
// asks for the host's secrets, the control plane's keys and database, and
// writes outside; the server itself would oblige, the sandbox does not.
// The documents it was meant to serve still work.
func TestTooWideFilesystemServerIsStillConfined(t *testing.T) {
	js := gatewaytest.NodeHarness(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal(err)
	}
	modules := sandboxtest.StageTree(t, filepath.Join(js, "node_modules"))
	docsDir, _ := sandboxtest.Stage(t, "/dev/null", "empty")
	docs := filepath.Join(docsDir, "docs")
	if err := os.Mkdir(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(docs, "guide.md"), []byte("# the guide"), 0o644); err != nil {
		t.Fatal(err)
	}
	server := filepath.Join(modules, "@modelcontextprotocol", "server-filesystem", "dist", "index.js")
	e := startGateway(t, fmt.Sprintf(`  - name: fs
    mcp:
      command: [%q, %q, "/"]
      env: ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"]
      sandbox: { read: [%q, %q], write: [] }
    callers: ["spiffe://bulkhead.local/agent/*"]
`, node, server, filepath.Dir(modules), docs))
	ctx := context.Background()
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cat.Servers = append(cat.Servers, api.ToolServer{Name: "fs", Sensitivity: "low",
		Tools: []api.ToolEntry{{Name: "read_text_file", PathArgs: []string{"path"}}, {Name: "write_file", PathArgs: []string{"path"}}}})
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
	files := append(gatewaytest.PolicyFiles(t), api.PolicyFile{Name: "fs.cedar", Content: `@id("reader-fs")
permit (principal in Role::"reader", action == Action::"call_tool", resource in ToolServer::"fs");`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	hc, _ := e.agentHTTP(t, "alpha", "reader")
	cs := e.MCP(t, hc, "fs")
	call := func(tool string, args map[string]any) string {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("%s %v: %v", tool, args, err)
		}
		return textOf(res)
	}
	// What the policy anticipated it refuses itself (the guardrails
	// forbid /etc/*; path_args refuses ".."): the first layer.
	for _, path := range []string{"/etc/shadow", "/tmp/../etc/cron.d/pwned"} {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": path, "content": "x"}}); err == nil || !strings.Contains(err.Error(), "denied") {
			t.Fatalf("%s past the policy: %v", path, err)
		}
	}
	if out := call("read_text_file", map[string]any{"path": filepath.Join(docs, "guide.md")}); out != "# the guide" {
		t.Fatalf("the documents it serves: %q", out)
	}
	// What it did not anticipate, the sandbox refuses: the control
	// plane's keys and database, the host's files elsewhere.
	for _, path := range []string{filepath.Join(e.DataDir, "master.key"), filepath.Join(e.DataDir, "bulkhead.db"),
		filepath.Join(e.DataDir, "ca", "root_key.pem"), "/root/.bash_history", "/var/lib/postgresql/PG_VERSION", "/home"} {
		out := call("read_text_file", map[string]any{"path": path})
		if !strings.Contains(out, "ENOENT") && !strings.Contains(out, "EACCES") {
			t.Fatalf("read %s through a too-wide server: %q", path, out)
		}
		t.Logf("read %s: %.120s", path, out)
	}
	for _, path := range []string{filepath.Join(docs, "pwned.md"), "/var/tmp/pwned", filepath.Join(e.DataDir, "pwned")} {
		out := call("write_file", map[string]any{"path": path, "content": "x"})
		if strings.Contains(out, "Successfully") {
			t.Fatalf("wrote %s through a too-wide server: %q", path, out)
		}
		t.Logf("write %s: %.120s", path, out)
	}
	if _, err := os.Stat(filepath.Join(docs, "pwned.md")); err == nil {
		t.Fatal("a file appeared in the read-only documents")
	}
}
