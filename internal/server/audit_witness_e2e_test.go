package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/cli"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// TestWitnessesCatchATruncatedLog is the attack a database alone cannot
// reveal: an intruder with the control plane's database (and nothing
// else) deletes the end of the audit log, its hashes and its checkpoints,
// lowers the tree's size and lets the checkpointer sign the shorter log,
// which then verifies on its own. The gateways witnessed the longer log:
// the in-process one from the data directory, the standalone one from its
// own host over mTLS. Both raise an alert (a record and a metric) and keep
// the larger checkpoint; an auditor's saved checkpoint fails verify too.
func TestWitnessesCatchATruncatedLog(t *testing.T) {
	ctx := context.Background()
	fake := clock.NewFake(time.Now())
	e := gatewaytest.Start(t, "", testenv.WithClock(fake))
	edge := metrics.New()
	var edgeDir string
	standalone(t, e, func(sa *server.StandaloneGateway) {
		sa.Operator, sa.Clock, sa.WitnessObserver, edgeDir = e.Operator, fake, edge, sa.Dir
	})
	cpMetrics := func() string {
		code, b := auditGet(t, e.Operator.HTTPClient(), e.URL+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET /metrics: %d", code)
		}
		return string(b)
	}
	edgeMetrics := func() string {
		rec := httptest.NewRecorder()
		edge.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}

	// The log grows and is signed; an auditor keeps its checkpoint.
	e.Enroll("alpha")
	e.Enroll("beta")
	signed, err := e.Server.Checkpointer().Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(t.TempDir(), "checkpoint.txt")
	if code, _, errs := runCLI(e.Env, "audit", "checkpoint", "--out", saved); code != 0 {
		t.Fatalf("audit checkpoint: exit %d\n%s", code, errs)
	}
	const size = "bulkhead_audit_witness_size"
	tick(t, fake, "both witnesses hold the signed checkpoint", func() bool {
		return metricValue(cpMetrics(), size) >= signed.Size && metricValue(edgeMetrics(), size) >= signed.Size
	})
	inProcessHeld, edgeHeld := metricValue(cpMetrics(), size), metricValue(edgeMetrics(), size)

	// The intruder: the last entries go, with every trace of them. A
	// running control plane would refuse to append to a log changed
	// behind its back (its audit journal knows where the log ends), so
	// the intruder works while it is stopped.
	cut := signed.Size / 2 // deep enough that the alerts recorded since do not regrow it
	e.Stop()
	truncateLog(t, e.Env, cut)
	e.Restart()
	resigned, err := e.Server.Checkpointer().Checkpoint(ctx)
	// (The restart's own records regrow the log a little.)
	if err != nil || resigned.Size >= signed.Size {
		t.Fatalf("the checkpointer signed %+v after the truncation: %v", resigned, err)
	}

	const truncated = `bulkhead_audit_witness_alerts_total{kind="truncated"}`
	tick(t, fake, "both witnesses raise an alert", func() bool {
		return metricValue(cpMetrics(), truncated) >= 1 && metricValue(edgeMetrics(), truncated) >= 1
	})
	// They keep what they held.
	if got := metricValue(cpMetrics(), size); got != inProcessHeld {
		t.Fatalf("the in-process witness holds %d, had %d", got, inProcessHeld)
	}
	if got := metricValue(edgeMetrics(), size); got != edgeHeld {
		t.Fatalf("the standalone witness holds %d, had %d", got, edgeHeld)
	}
	// The alerts are on record, each by its gateway (the standalone
	// gateway's reaches the log through the ingest API, after its metric).
	testenv.Await(t, 10*time.Second, "both alerts on record", func() bool {
		actors := map[string]bool{}
		for _, ev := range events(t, e.Env, audit.ActionAuditWitness) {
			actors[ev.Actor.ID] = true
		}
		return len(actors) >= 2
	})
	by := map[string]audit.Event{}
	for _, ev := range events(t, e.Env, audit.ActionAuditWitness) {
		if ev.Decision != audit.Deny || ev.Detail["kind"] != audit.AlertTruncated || ev.Actor.Kind != audit.ActorWorkload {
			t.Fatalf("witness alert recorded as %+v", ev)
		}
		by[ev.Actor.ID] = ev
	}
	inProcess, ok := by["spiffe://bulkhead.local/bulkhead/gateway/default"]
	if !ok || inProcess.Detail["held_size"] != strconv.FormatInt(inProcessHeld, 10) {
		t.Fatalf("the in-process gateway's alert: %+v (alerts by %v)", inProcess, keys(by))
	}
	remote, ok := by["spiffe://bulkhead.local/bulkhead/gateway/edge"]
	if !ok || remote.Detail["recorded_by"] != "spiffe://bulkhead.local/bulkhead/gateway/edge" || remote.Detail["held_size"] != strconv.FormatInt(edgeHeld, 10) {
		t.Fatalf("the standalone gateway's alert: %+v (alerts by %v)", remote, keys(by))
	}
	// The standalone gateway pinned the log's key on first use, on its
	// own disk, beside the checkpoint it holds.
	var wf struct{ Key, Checkpoint string }
	if b, err := os.ReadFile(filepath.Join(edgeDir, gateway.WitnessFile)); err != nil || json.Unmarshal(b, &wf) != nil ||
		wf.Key != e.Server.AuditKey().VerifierKey || !strings.Contains(wf.Checkpoint, "\n"+strconv.FormatInt(edgeHeld, 10)+"\n") {
		t.Fatalf("the standalone gateway's witness file: %+v, %v", wf, err)
	}

	// A gateway records its own alerts only: it cannot make another
	// gateway's witness speak.
	forged, _ := json.Marshal(audit.Event{Time: fake.Now(), Action: audit.ActionAuditWitness, Decision: audit.Deny,
		Actor: audit.Actor{Kind: audit.ActorWorkload, ID: "spiffe://bulkhead.local/bulkhead/gateway/default"}})
	if _, err := e.Client(edgeDir).IngestAudit(ctx, []json.RawMessage{forged}); err == nil {
		t.Fatal("a gateway recorded a witness alert in another gateway's name")
	}

	// The control plane kept its newest checkpoint outside the database
	// too: verify, which checks the log extends it, catches the cut.
	code, _, errs := runCLI(e.Env, "audit", "verify", "--no-progress")
	if code != 2 || !strings.Contains(errs, "entries were deleted from the end") {
		t.Fatalf("audit verify of the shortened log beside the kept checkpoint: exit %d, want 2\n%s", code, errs)
	}
	// An intruder who can also write the data directory removes that
	// file: on its own the shortened log then verifies, which is what the
	// gateways' witnesses, on their own disks, are for. Against the
	// auditor's saved checkpoint it does not.
	if err := os.Remove(filepath.Join(e.DataDir, "audit", audit.CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI(e.Env, "audit", "verify", "--no-progress"); code != 0 {
		t.Fatalf("audit verify of the self-consistent shortened log: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = runCLI(e.Env, "audit", "verify", "--no-progress", "--checkpoint", saved)
	if code != 2 || !strings.Contains(errs, "saved checkpoint signed "+strconv.FormatInt(signed.Size, 10)) {
		t.Fatalf("audit verify --checkpoint: exit %d, want 2\n%s", code, errs)
	}
}

// truncateLog deletes the log's entries from n on, as an intruder in the
// database does: events, hashes and checkpoints, and the tree's size, in
// one transaction.
func truncateLog(t *testing.T, env *testenv.Env, n int64) {
	t.Helper()
	db, err := store.Open(context.Background(), "", env.DataDir, storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.SQL().Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		sql string
		arg int64
	}{
		{`DELETE FROM audit_events WHERE seq >= ?`, n},
		{`DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashCount(n)},
		{`DELETE FROM audit_checkpoints WHERE size > ?`, n},
		{`UPDATE audit_tree SET size = ? WHERE id = 1`, n},
	} {
		if _, err := tx.Exec(q.sql, q.arg); err != nil {
			_ = tx.Rollback()
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// tick moves the fake clock a witness interval at a time, waiting after
// each step for cond, until it holds.
func tick(t *testing.T, fake *clock.Fake, what string, cond func() bool) {
	t.Helper()
	for range 20 {
		fake.Advance(audit.DefaultWitnessInterval)
		for wait := time.Now().Add(time.Second); time.Now().Before(wait); time.Sleep(5 * time.Millisecond) {
			if cond() {
				return
			}
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

// metricValue is the value of a series in a scrape, -1 when absent.
func metricValue(scrape, series string) int64 {
	for _, l := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return int64(f)
			}
		}
	}
	return -1
}

// runCLI runs the bulkhead CLI as the control plane's operator on its host.
func runCLI(env *testenv.Env, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	args = append([]string{"--data-dir", env.DataDir, "--server", env.URL}, args...)
	code = cli.Main(context.Background(), args, &out, &errb, func(string) (string, bool) { return "", false })
	return code, out.String(), errb.String()
}

func keys(m map[string]audit.Event) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
