package server_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// propagation is how soon a change made on one replica must be in force
// at every gateway.
const propagation = time.Second

// replicaBudget is the call budget per agent of the replicated gateways.
const replicaBudget = 8

// Two control plane replicas (A in this process, B a process of its own
// that can be SIGKILLed) on one PostgreSQL, and two standalone gateways:
// edge1 fed by A first, edge2 by B first. What one replica does is in
// force at both gateways; budgets hold across them; the log stays one;
// killing a replica under load loses no acknowledged record and the
// gateways keep serving through the other.
func TestReplicasOnOnePostgreSQL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a replica in a process of its own")
	}
	ctx := context.Background()
	dsn := storetest.PostgresDSN(t)
	a := gatewaytest.Start(t, "", testenv.WithStore(dsn))
	bdir := testenv.JoinDir(t, a.DataDir)
	b := testenv.StartReplica(t, bdir, dsn, "127.0.0.1:0")
	opB, err := client.NewFromDir(b.URL, filepath.Join(bdir, "operator"))
	if err != nil {
		t.Fatal(err)
	}
	servers := `
servers:
  - name: files
    mcp: { url: ` + a.Files.URL + ` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
    budget: { calls: ` + strconv.Itoa(replicaBudget) + ` }
`
	edge1, _ := startStandalone(t, "edge1", a.URL+","+b.URL, servers, func(sa *server.StandaloneGateway) { sa.Operator = a.Operator })
	edge2, _ := startStandalone(t, "edge2", b.URL+","+a.URL, servers, func(sa *server.StandaloneGateway) { sa.Operator = opB })
	session := func(c *client.Client, gw string) *mcp.ClientSession {
		return connectRetrying(t, gw+"/mcp/files", gatewaytest.AgentHTTPFor(c, "https://edge.bulkhead.test"))
	}
	read := func(cs *mcp.ClientSession, path string) error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": path}})
		return err
	}
	list := func(cs *mcp.ClientSession) func() error {
		return func() error { _, err := cs.ListTools(ctx, nil); return err }
	}

	t.Run("an agent revoked on A is refused at the gateway fed by B", func(t *testing.T) {
		_, alpha := a.Agent(t, "alpha", "reader")
		cs := session(alpha, edge2)
		if err := read(cs, "/srv/x"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Operator.RevokeAgent(ctx, "alpha", "compromised"); err != nil {
			t.Fatal(err)
		}
		t.Logf("refused at edge2 after %s", testenv.Await(t, propagation, "alpha refused at edge2", func() bool { return list(cs)() != nil }))
	})

	t.Run("a token revoked on B is refused at the gateway fed by A", func(t *testing.T) {
		revokeTokenOnB(t, a, opB, edge1, "beta")
	})

	t.Run("a budget of N allows exactly N calls across both gateways", func(t *testing.T) {
		_, gamma := a.Agent(t, "gamma", "reader")
		sessions := []*mcp.ClientSession{session(gamma, edge1), session(gamma, edge2)}
		var ok, spent atomic.Int64
		var wg sync.WaitGroup
		for i := range 3 * replicaBudget {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := read(sessions[i%2], "/srv/x")
				switch {
				case err == nil:
					ok.Add(1)
				case strings.Contains(err.Error(), "budget"):
					spent.Add(1)
				default:
					t.Errorf("call %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != replicaBudget || spent.Load() != 2*replicaBudget {
			t.Fatalf("%d calls allowed and %d refused for the budget, want %d and %d", ok.Load(), spent.Load(), replicaBudget, 2*replicaBudget)
		}
	})

	t.Run("a policy applied on A is in force at both gateways", func(t *testing.T) {
		_, delta := a.Agent(t, "delta", "")
		sessions := []*mcp.ClientSession{session(delta, edge1), session(delta, edge2)}
		for _, cs := range sessions {
			if err := read(cs, "/srv/x"); err == nil || !strings.Contains(err.Error(), "denied by policy") {
				t.Fatalf("delta before the policy: %v", err)
			}
		}
		files := append(gatewaytest.PolicyFiles(t), api.PolicyFile{Name: "delta.cedar", Content: `@id("delta-docs")
permit (principal == Agent::"spiffe://bulkhead.local/agent/delta", action == Action::"call_tool", resource in ToolGroup::"docs");`})
		if _, err := a.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i, cs := range sessions {
			testenv.Await(t, propagation-time.Since(start), "delta allowed", func() bool { return read(cs, "/srv/x") == nil })
			t.Logf("in force at edge%d after %s", i+1, time.Since(start))
		}
	})

	t.Run("SIGKILL of a replica under load loses no acknowledged record", func(t *testing.T) {
		_, eps := a.Agent(t, "epsilon", "reader")
		sessions := []*mcp.ClientSession{session(eps, edge1), session(eps, edge2)}
		var acked atomic.Int64
		var afterKill [2]atomic.Int64
		var killed atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					// Listing is decided and recorded (write-first) but
					// not metered: load without spending the budget.
					if _, err := sessions[w%2].ListTools(ctx, nil); err == nil {
						acked.Add(1)
						if killed.Load() {
							afterKill[w%2].Add(1)
						}
					}
				}
			}()
		}
		testenv.Await(t, 20*time.Second, "load before the kill", func() bool { return acked.Load() >= 100 })
		b.Kill()
		killed.Store(true)
		testenv.Await(t, 30*time.Second, "both gateways serving through A", func() bool {
			return afterKill[0].Load() >= 50 && afterKill[1].Load() >= 50
		})
		close(stop)
		wg.Wait()
		var recorded int64
		for _, ev := range events(t, a.Env, "gateway.list_tools") {
			if ev.Actor.ID == "spiffe://bulkhead.local/agent/epsilon" && ev.Decision == audit.Allow {
				recorded++
			}
		}
		if recorded < acked.Load() {
			t.Fatalf("%d allowed calls acknowledged, only %d recorded", acked.Load(), recorded)
		}
		t.Logf("%d calls acknowledged and recorded; edge1 %d and edge2 %d after the kill", acked.Load(), afterKill[0].Load(), afterKill[1].Load())
	})

	t.Run("token revocation holds after either replica restarts", func(t *testing.T) {
		b = testenv.StartReplica(t, bdir, dsn, b.Addr())
		revokeTokenOnB(t, a, opB, edge1, "zeta")
		a.Restart()
		revokeTokenOnB(t, a, opB, edge1, "eta")
		revokeTokenOnB(t, a, opB, edge2, "theta")
	})

	// One Merkle log, written by both replicas and both gateways, verifies.
	if _, err := a.Server.Checkpointer().Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, a.Server.Store(), audit.VerifyOptions{Verifier: a.Server.AuditKey().Verifier})
	if err != nil {
		t.Fatalf("the shared log does not verify: %v", err)
	}
	t.Logf("shared log verifies: %+v", rep)
}

// revokeTokenOnB revokes, on replica B, the token a new agent name uses at
// gateway gw, and checks the gateway refuses it within propagation.
func revokeTokenOnB(t *testing.T, a *gatewaytest.Env, opB *client.Client, gw, name string) {
	t.Helper()
	_, c := a.Agent(t, name, "reader")
	gt, err := c.GatewayTransport(client.GatewayOptions{Resource: "https://edge.bulkhead.test"})
	if err != nil {
		t.Fatal(err)
	}
	cs := connectRetrying(t, gw+"/mcp/files", &http.Client{Transport: gt, Timeout: 30 * time.Second})
	if _, err := cs.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	tok, err := gt.Token()
	if err != nil {
		t.Fatal(err)
	}
	if err := opB.RevokeToken(context.Background(), tok.AccessToken, "leaked"); err != nil {
		t.Fatal(err)
	}
	took := testenv.Await(t, propagation, name+"'s token refused", func() bool { _, err := cs.ListTools(context.Background(), nil); return err != nil })
	t.Logf("%s's token refused at %s after %s", name, gw, took)
}

// A replica started with the CA but without the master key is refused
// before it writes a key of its own, and says which file is missing; one
// with another key is refused too.
func TestReplicaWithoutTheMasterKeyIsRefused(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.PostgresDSN(t)
	a := testenv.Start(t, testenv.WithStore(dsn))
	if _, err := a.Operator.SetSecret(ctx, "x", []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	dir := testenv.JoinDir(t, a.DataDir)
	key := filepath.Join(dir, "master.key")
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: dir, Listen: "127.0.0.1:0", Store: dsn, TrustDomain: a.Server.TrustDomain()}
	_, err := server.New(ctx, cfg, clock.Real{}, storetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), key+" is missing") {
		t.Fatalf("start without the master key: %v", err)
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a new master key was written: %v", err)
	}
	if err := os.WriteFile(key, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.New(ctx, cfg, clock.Real{}, storetest.Logger(t)); err == nil || !strings.Contains(err.Error(), "not the master key") {
		t.Fatalf("start with another master key: %v", err)
	}
}
