package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the tamper steps open the database directly

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/cli"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// auditCLI runs the CLI against a control plane as its operator on the
// same host: the data directory and the server URL are the only settings.
type auditCLI struct {
	t       *testing.T
	dataDir string
	url     string
}

func (c auditCLI) run(ctx context.Context, stdout io.Writer, args ...string) (int, string) {
	var errb bytes.Buffer
	args = append([]string{"--data-dir", c.dataDir, "--server", c.url}, args...)
	code := cli.Main(ctx, args, stdout, &errb, func(string) (string, bool) { return "", false })
	return code, errb.String()
}

func (c auditCLI) must(args ...string) string {
	c.t.Helper()
	var out bytes.Buffer
	if code, errs := c.run(context.Background(), &out, args...); code != 0 {
		c.t.Fatalf("bulkhead %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out.String()
}

func (c auditCLI) fails(code int, args ...string) string {
	c.t.Helper()
	var out bytes.Buffer
	got, errs := c.run(context.Background(), &out, args...)
	if got != code {
		c.t.Fatalf("bulkhead %s: exit %d, want %d\n%s%s", strings.Join(args, " "), got, code, out.String(), errs)
	}
	return errs
}

func TestAuditThroughTheCLI(t *testing.T) {
	ctx := context.Background()
	env := testenv.Start(t)
	c := auditCLI{t: t, dataDir: env.DataDir, url: env.URL}
	checkpoint := func() {
		t.Helper()
		if _, err := env.Server.Checkpointer().Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	env.Enroll("alpha")
	checkpoint()
	saved := filepath.Join(t.TempDir(), "checkpoint.txt")
	c.must("audit", "checkpoint", "--out", saved)

	// tail -f, running while more happens.
	var follow syncBuffer
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		if code, errs := c.run(fctx, &follow, "audit", "tail", "-f", "-n", "0", "--action", audit.ActionAgentCreate); code != 0 {
			t.Errorf("tail -f: exit %d\n%s", code, errs)
		}
	}()
	env.Enroll("beta")
	if _, err := env.Operator.SetAgentEnabled(ctx, "beta", false); err != nil {
		t.Fatal(err)
	}
	// An agent reaching for an operator endpoint is refused and recorded.
	if _, err := env.Client(env.Enroll("gamma")).ListAgents(ctx); err == nil {
		t.Fatal("an agent listed agents")
	}
	checkpoint()
	waitFor(t, &follow, "spiffe://bulkhead.local/agent/gamma")
	stopFollow()
	<-followed
	if out := follow.String(); !strings.Contains(out, "agent.create") || strings.Contains(out, "svid.issue") {
		t.Fatalf("tail -f --action agent.create printed:\n%s", out)
	}

	t.Run("verify", func(t *testing.T) {
		out := c.must("audit", "verify", "--checkpoint", saved)
		if !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, "extends saved checkpoint") {
			t.Fatalf("verify printed:\n%s", out)
		}
		if out := c.must("audit", "verify", "--remote", "--checkpoint", saved); !strings.Contains(out, "consistency proof ok") {
			t.Fatalf("verify --remote printed:\n%s", out)
		}
		var res struct {
			OK     bool         `json:"ok"`
			Report audit.Report `json:"report"`
		}
		if err := json.Unmarshal([]byte(c.must("audit", "verify", "--json")), &res); err != nil || !res.OK || res.Report.Size == 0 {
			t.Fatalf("verify --json: %+v, %v", res, err)
		}
	})
	t.Run("key and checkpoint", func(t *testing.T) {
		if got := strings.TrimSpace(c.must("audit", "key")); got != env.Server.AuditKey().VerifierKey {
			t.Fatalf("audit key = %q", got)
		}
		var cp struct {
			Origin string `json:"origin"`
			Size   int64  `json:"size"`
		}
		if err := json.Unmarshal([]byte(c.must("audit", "checkpoint", "--json")), &cp); err != nil || cp.Origin != "bulkhead.local/audit" || cp.Size == 0 {
			t.Fatalf("checkpoint --json: %+v, %v", cp, err)
		}
	})
	t.Run("search", func(t *testing.T) {
		var evs []audit.Event
		if err := json.Unmarshal([]byte(c.must("audit", "search", "--agent", "gamma", "--since", "1h", "--decision", "deny", "--json")), &evs); err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Action != audit.ActionAPIAccess || evs[0].Actor.Kind != audit.ActorAgent ||
			evs[0].Actor.ID != "spiffe://bulkhead.local/agent/gamma" {
			t.Fatalf("gamma's denials: %+v", evs)
		}
		if out := c.must("audit", "search", "--agent", "beta"); !strings.Contains(out, "agent.disable") || !strings.Contains(out, "operator:spiffe://bulkhead.local/operator/admin") {
			t.Fatalf("search --agent beta:\n%s", out)
		}
		if lines := strings.Split(strings.TrimSpace(c.must("audit", "tail", "-n", "3", "--json")), "\n"); len(lines) != 3 {
			t.Fatalf("tail -n 3 printed %d lines", len(lines))
		}
	})
	t.Run("export", func(t *testing.T) {
		n := 0
		sc := bufio.NewScanner(strings.NewReader(c.must("audit", "export", "--format", "ocsf")))
		for sc.Scan() {
			var e map[string]any
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e["class_uid"] == nil || e["metadata"] == nil {
				t.Fatalf("not an OCSF line: %s", sc.Text())
			}
			n++
		}
		if n < 10 {
			t.Fatalf("exported %d OCSF events", n)
		}
		out := filepath.Join(t.TempDir(), "events.jsonl")
		c.must("audit", "export", "--format", "json", "--agent", "alpha", "--out", out)
		b, _ := os.ReadFile(out)
		if !bytes.Contains(b, []byte(`"spiffe://bulkhead.local/agent/alpha"`)) {
			t.Fatalf("json export:\n%s", b)
		}
	})
	t.Run("archive and prune", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "archive.jsonl")
		out := c.must("audit", "archive", "--before", "5", "--out", archive, "--prune", "--reason", "retention test")
		if !strings.Contains(out, "archived entries [0, 5)") || !strings.Contains(out, "pruned 5 entries") {
			t.Fatalf("archive printed:\n%s", out)
		}
		if out := c.must("audit", "verify", "--archive", archive); !strings.HasPrefix(out, "ok: archive holds entries [0, 5)") {
			t.Fatalf("verify --archive printed:\n%s", out)
		}
		checkpoint()
		if out := c.must("audit", "verify", "--checkpoint", saved); !strings.Contains(out, "5 pruned") {
			t.Fatalf("verify after prune printed:\n%s", out)
		}
		var evs []audit.Event
		if err := json.Unmarshal([]byte(c.must("audit", "search", "--action", audit.ActionAuditPrune, "--json")), &evs); err != nil ||
			len(evs) != 1 || evs[0].Actor.Kind != audit.ActorOperator || evs[0].Reasons[0] != "retention test" {
			t.Fatalf("the prune was recorded as %+v, %v", evs, err)
		}
	})

	// The tamper cases edit the SQLite file directly, with the server
	// stopped, each on its own copy of the data directory.
	env.Stop()
	tampers := []struct {
		name  string
		sql   []string
		index int64
	}{
		{"one byte changed", []string{`UPDATE audit_events SET body = CAST(REPLACE(CAST(body AS TEXT), 'svid.issue', 'svid.jssue') AS BLOB), action = 'svid.jssue' WHERE seq = (SELECT MIN(seq) FROM audit_events WHERE action = 'svid.issue' AND seq > 9)`}, -1},
		{"one deleted", []string{`DELETE FROM audit_events WHERE seq = 12`}, 12},
		{"two swapped", []string{`UPDATE audit_events SET seq = -1 WHERE seq = 8`, `UPDATE audit_events SET seq = 8 WHERE seq = 14`, `UPDATE audit_events SET seq = 14 WHERE seq = -1`}, 8},
		{"one inserted", []string{`UPDATE audit_events SET seq = seq + 100000 WHERE seq >= 10`, `UPDATE audit_events SET seq = seq - 99999 WHERE seq >= 100000`,
			`INSERT INTO audit_events SELECT 10, time, actor_kind, actor_id, action, target, decision, task, body, decision_id FROM audit_events WHERE seq = 9`}, 10},
	}
	for _, tc := range tampers {
		t.Run("tampered: "+tc.name, func(t *testing.T) {
			dir := copyDataDir(t, env.DataDir)
			db, err := sql.Open("sqlite", filepath.Join(dir, "bulkhead.db"))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.index
			if want < 0 {
				if err := db.QueryRow(`SELECT MIN(seq) FROM audit_events WHERE action = 'svid.issue' AND seq > 9`).Scan(&want); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range tc.sql {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Close()
			tc2 := auditCLI{t: t, dataDir: dir, url: env.URL}
			errs := tc2.fails(2, "audit", "verify")
			if !strings.Contains(errs, fmt.Sprintf("first bad entry %d:", want)) {
				t.Fatalf("verify did not name entry %d:\n%s", want, errs)
			}
		})
	}
	t.Run("untouched copy verifies", func(t *testing.T) {
		c := auditCLI{t: t, dataDir: copyDataDir(t, env.DataDir), url: env.URL}
		c.must("audit", "verify", "--checkpoint", saved)
	})
}

func copyDataDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, name := range []string{"bulkhead.db", "bulkhead.db-wal", "bulkhead.db-shm", filepath.Join("audit", audit.VerifierFile)} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, name)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, b *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("never printed %q; got:\n%s", s, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A store that was emptied or replaced (a failed disk, a wrong volume)
// does not verify: the server keeps its newest signed checkpoint outside
// the database, and verify checks the log extends it.
func TestAnEmptiedStoreDoesNotVerify(t *testing.T) {
	env := testenv.Start(t)
	if _, err := env.Server.Checkpointer().Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(env.DataDir, "audit", audit.CheckpointFile)
	note, err := os.ReadFile(kept)
	if err != nil {
		t.Fatalf("no checkpoint kept outside the store: %v", err)
	}
	dir := copyDataDir(t, env.DataDir)
	c := auditCLI{t: t, dataDir: dir, url: env.URL}
	if err := os.WriteFile(filepath.Join(dir, "audit", audit.CheckpointFile), note, 0o600); err != nil {
		t.Fatal(err)
	}
	c.must("audit", "verify") // the copy is intact
	for _, f := range []string{"bulkhead.db", "bulkhead.db-wal", "bulkhead.db-shm"} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "bulkhead.db"))
	if err == nil {
		_, err = db.Exec(`CREATE TABLE x (y INTEGER)`) // an unrelated, empty database
		db.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	errs := c.fails(2, "audit", "verify")
	if !strings.Contains(errs, "checkpoint") {
		t.Fatalf("an emptied store: %s", errs)
	}
}
