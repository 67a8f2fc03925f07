package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func auditGet(t *testing.T, hc *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func auditGetJSON(t *testing.T, hc *http.Client, url string, out any) {
	t.Helper()
	code, b := auditGet(t, hc, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestAuditProofsOverTheAPI runs a control plane on each store and checks
// the audit API end to end: the public verifier key, signed checkpoints,
// entries, inclusion and consistency proofs checked with tlog, searches, and
// refusals of callers that are not operators.
func TestAuditProofsOverTheAPI(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			env := testenv.Start(t, testenv.WithBackend(b))
			op := env.Operator.HTTPClient()
			alpha := env.Enroll("alpha")
			if _, err := env.Server.Checkpointer().Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}

			// The verifier key is public, like the trust bundle.
			code, vkey := auditGet(t, publicClient(t, env.Server.BundlePEM()), env.URL+"/v1/audit/key")
			if code != http.StatusOK || strings.TrimSpace(string(vkey)) != env.Server.AuditKey().VerifierKey {
				t.Fatalf("GET /v1/audit/key: %d %s", code, vkey)
			}
			v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
			if err != nil {
				t.Fatal(err)
			}
			code, msg := auditGet(t, op, env.URL+"/v1/audit/checkpoint")
			if code != http.StatusOK {
				t.Fatalf("GET /v1/audit/checkpoint: %d %s", code, msg)
			}
			old, err := audit.OpenCheckpoint(msg, v)
			if err != nil || old.Origin != "bulkhead.local/audit" || old.Size == 0 {
				t.Fatalf("checkpoint %+v: %v", old, err)
			}

			// Every entry of the checkpoint is provably in it.
			for seq := int64(0); seq < old.Size; seq++ {
				var e audit.Entry
				auditGetJSON(t, op, env.URL+"/v1/audit/entries/"+strconv.FormatInt(seq, 10), &e)
				var p audit.InclusionProof
				auditGetJSON(t, op, env.URL+"/v1/audit/proof/inclusion?seq="+strconv.FormatInt(seq, 10), &p)
				if p.Size != old.Size || p.LeafHash != tlog.RecordHash(e.Body) {
					t.Fatalf("entry %d: proof %+v", seq, p)
				}
				if err := tlog.CheckRecord(p.Proof, old.Size, old.Root, seq, tlog.RecordHash(e.Body)); err != nil {
					t.Fatalf("inclusion proof of entry %d: %v", seq, err)
				}
			}

			// The log grows; the new checkpoint provably extends the old.
			env.Enroll("beta")
			if _, err := env.Server.Checkpointer().Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			var cp audit.ConsistencyProof
			auditGetJSON(t, op, env.URL+"/v1/audit/proof/consistency?old="+strconv.FormatInt(old.Size, 10), &cp)
			cur, err := audit.OpenCheckpoint([]byte(cp.Checkpoint), v)
			if err != nil || cur.Size <= old.Size {
				t.Fatalf("new checkpoint %+v: %v", cur, err)
			}
			if err := tlog.CheckTree(cp.Proof, cur.Size, cur.Root, old.Size, old.Root); err != nil {
				t.Fatalf("consistency proof %d→%d: %v", old.Size, cur.Size, err)
			}

			var evs []audit.Event
			auditGetJSON(t, op, env.URL+"/v1/audit/events?agent=alpha&action=svid.issue", &evs)
			if len(evs) != 1 || evs[0].Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
				t.Fatalf("alpha's issuance: %+v", evs)
			}

			for _, c := range []struct {
				url  string
				want int
			}{
				{"/v1/audit/proof/inclusion?seq=-1", http.StatusBadRequest},
				{"/v1/audit/proof/inclusion?seq=99999", http.StatusNotFound},
				{"/v1/audit/proof/consistency?old=1&new=99999", http.StatusNotFound},
				{"/v1/audit/entries/zero", http.StatusBadRequest},
				{"/v1/audit/events?limit=0", http.StatusBadRequest},
				{"/v1/audit/events?agent=../x", http.StatusBadRequest},
			} {
				if code, b := auditGet(t, op, env.URL+c.url); code != c.want {
					t.Errorf("GET %s: %d %s, want %d", c.url, code, b, c.want)
				}
			}

			// An agent may not read the log; the attempt is evidence.
			code, _ = auditGet(t, env.Client(alpha).HTTPClient(), env.URL+"/v1/audit/checkpoint")
			if code != http.StatusForbidden {
				t.Fatalf("an agent read the checkpoint: %d", code)
			}
			if ev := lastEvent(t, env, audit.ActionAPIAccess); ev.Target != "GET /v1/audit/checkpoint" || ev.Decision != audit.Deny {
				t.Fatalf("refusal recorded as %+v", ev)
			}
		})
	}
}

// TestAuditLogSurvivesRestartsSigned checks that a clean shutdown signs
// the whole log and that the signing key is kept across restarts.
func TestAuditLogSurvivesRestartsSigned(t *testing.T) {
	ctx := context.Background()
	env := testenv.Start(t, testenv.WithConfig(func(c *server.Config) { c.AuditCheckpointEvery = 1_000_000 }))
	key := env.Server.AuditKey().VerifierKey
	env.Enroll("alpha")
	env.Restart()
	if env.Server.AuditKey().VerifierKey != key {
		t.Fatal("the log's key changed across a restart")
	}
	rep, err := audit.Verify(ctx, env.Server.Store(), audit.VerifyOptions{Verifier: env.Server.AuditKey().Verifier})
	if err != nil {
		t.Fatal(err)
	}
	// Everything before the restart is signed; only the events of the
	// new start may still wait for a checkpoint.
	starts := events(t, env, audit.ActionServerStart)
	if len(starts) != 2 || rep.Latest.Size <= starts[1].Seq-1 {
		t.Fatalf("after a restart the latest checkpoint covers %d entries; the second start is entry %d", rep.Latest.Size, starts[1].Seq)
	}
}

// TestReplicasMustShareTheLogKey: a second server on the same store with a
// different audit key would sign a second history; it refuses to start.
func TestReplicasMustShareTheLogKey(t *testing.T) {
	env := testenv.Start(t)
	env.Stop()
	cfg := server.Config{DataDir: env.DataDir, Listen: "127.0.0.1:0", TrustDomain: td}
	// Another key in its place (a missing one is restored from the store).
	if err := os.RemoveAll(cfg.AuditDir()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := audit.LoadOrCreateKey(cfg.AuditDir(), cfg.AuditLogName()); err != nil {
		t.Fatal(err)
	}
	_, err := server.New(context.Background(), cfg, clock.Real{}, storetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "holds another key") {
		t.Fatalf("start with another audit key = %v", err)
	}
}

// Every newly signed checkpoint also goes to the witness URL, out of reach
// of whoever holds the database and the data directory.
func TestCheckpointsArePublishedToTheWitnessURL(t *testing.T) {
	notes := make(chan []byte, 16)
	witness := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		notes <- b
	}))
	defer witness.Close()
	env := testenv.Start(t, testenv.WithConfig(func(c *server.Config) { c.AuditWitnessURL = witness.URL }))
	env.Enroll("alpha")
	cp, err := env.Server.Checkpointer().Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(10 * time.Second); ; {
		select {
		case b := <-notes:
			got, err := audit.OpenCheckpoint(b, env.Server.AuditKey().Verifier)
			if err != nil {
				t.Fatalf("the witness got %q: %v", b, err)
			}
			if got == cp {
				return
			}
		case <-deadline:
			t.Fatalf("the witness never got the checkpoint of size %d", cp.Size)
		}
	}
}
