package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// A `serve` process is SIGKILLed while an agent's calls stream through its
// in-process gateway: reads (files/read_file, declared effects: read,
// recorded while they are forwarded) and writes (files/write_file,
// recorded before). In the log that survives, every call whose answer
// reached the agent has its decision record: no answer ever reached an
// agent for a call whose record is missing.
func TestNoAnswerReachesAnAgentWithoutItsRecordAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs serve in a process of its own")
	}
	ctx := context.Background()
	files := gatewaytest.StartFiles(t, "Bearer "+gatewaytest.FilesSecret)
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(`listen: 127.0.0.1:0
resource: `+gatewaytest.Resource+`
servers:
  - name: files
    mcp: { url: `+files.URL+` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv := testenv.StartServe(t, dir, cfg)
	op, err := client.NewFromDir(srv.URL, filepath.Join(dir, "operator"))
	if err != nil {
		t.Fatal(err)
	}
	gatewaytest.Configure(t, op)
	if _, err := op.CreateAgent(ctx, "worker", 0, "mcp"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.AddAgentRole(ctx, "worker", "admin"); err != nil {
		t.Fatal(err)
	}
	jt, err := op.JoinToken(ctx, "worker", 0)
	if err != nil {
		t.Fatal(err)
	}
	agentDir := filepath.Join(t.TempDir(), "worker")
	if _, err := client.Enroll(ctx, srv.URL, jt.Token, agentDir); err != nil {
		t.Fatal(err)
	}
	agent, err := client.NewFromDir(srv.URL, agentDir)
	if err != nil {
		t.Fatal(err)
	}
	cs := gatewaytest.Connect(t, srv.GatewayURL+"/mcp/files", gatewaytest.AgentHTTPFor(agent, gatewaytest.Resource))

	// Calls with distinct arguments, so that each answer names its record
	// by the digest of its arguments.
	var (
		mu     sync.Mutex
		acked  = map[string]string{} // argument digest -> the call
		n      atomic.Int64
		loaded atomic.Bool
		kill   sync.Once
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				i := n.Add(1)
				path := fmt.Sprintf("/srv/crash/%d", i)
				tool, args, want := "read_file", map[string]any{"path": path}, "contents of "+path
				if i%2 == 0 {
					tool, args, want = "write_file", map[string]any{"path": path, "content": "x"}, "wrote 1 bytes to "+path
				}
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
				if err != nil {
					return // the process is gone
				}
				if res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != want {
					continue // refused: not an answer from the tool
				}
				// Under load, the process dies the moment a read's answer
				// reaches the agent: the answer that would most likely
				// have outrun its record.
				if loaded.Load() && tool == "read_file" {
					kill.Do(srv.Kill)
				}
				mu.Lock()
				acked[argumentDigest(t, args)] = tool + " " + path
				mu.Unlock()
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	testenv.Await(t, 60*time.Second, "answers under load", func() bool { return count() >= 300 })
	loaded.Store(true)
	wg.Wait()
	kill.Do(srv.Kill)

	db, err := store.Open(ctx, "", dir, storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Events(ctx, audit.Query{AfterSeq: -1, Actions: []string{"gateway.call_tool"}, Decision: audit.Allow})
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil {
			t.Fatal(err)
		}
		recorded[ev.Digests["arguments"]] = true
	}
	missing := 0
	for d, call := range acked {
		if !recorded[d] {
			missing++
			t.Errorf("the agent got the answer of %s, whose record is not in the log", call)
		}
	}
	t.Logf("%d calls made, %d answered, %d recorded when the process was killed; %d answered without a record", n.Load(), len(acked), len(recorded), missing)
	if len(recorded) < len(acked) {
		t.Fatalf("fewer records (%d) than answers (%d)", len(recorded), len(acked))
	}
}

// argumentDigest is the digest the gateway records of a call's arguments:
// of their canonical encoding.
func argumentDigest(t *testing.T, args map[string]any) string {
	b, err := json.Marshal(args)
	if err != nil {
		t.Error(err)
		return ""
	}
	v, err := strictjson.Parse(b, strictjson.Limits{})
	if err != nil {
		t.Error(err)
		return ""
	}
	return audit.Digest(v.Encode())
}
