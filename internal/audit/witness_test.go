package audit_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// sqlite is the backend the witness tests run on: what a witness watches
// is the log's checkpoints, whatever store keeps them.
var sqlite = storetest.Backend{Name: "sqlite", DSN: func(t testing.TB) (string, string) { return "", t.TempDir() }}

const gatewayID = "spiffe://test.local/bulkhead/gateway/edge"

// swapSource is a CheckpointSource whose log a test replaces, the way a
// compromised control plane would show a witness another history.
type swapSource struct {
	mu  sync.Mutex
	src audit.CheckpointSource
}

func (s *swapSource) set(src audit.CheckpointSource) { s.mu.Lock(); s.src = src; s.mu.Unlock() }

func (s *swapSource) get() audit.CheckpointSource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.src
}

func (s *swapSource) Latest(ctx context.Context) ([]byte, error) { return s.get().Latest(ctx) }

func (s *swapSource) Consistency(ctx context.Context, old, new int64) ([]tlog.Hash, error) {
	return s.get().Consistency(ctx, old, new)
}

// failingRecorder is a log that cannot record: the alert must still count.
type failingRecorder struct{}

func (failingRecorder) Record(context.Context, audit.Event) (audit.Event, error) {
	return audit.Event{}, audit.ErrUnavailable
}

// witnessed is a signed log of 20 entries and a witness holding its
// checkpoint, the key pinned on first use and kept in file.
type witnessed struct {
	*fixture
	src     *swapSource
	file    string
	metrics *metrics.Metrics
	w       *audit.Witness
	held    audit.Checkpoint
}

func (x *witnessed) config(t *testing.T) audit.WitnessConfig {
	return audit.WitnessConfig{Source: x.src, File: x.file, Recorder: x.log,
		Actor:    audit.Actor{Kind: audit.ActorWorkload, ID: gatewayID},
		Observer: x.metrics, Clock: x.clock, Logger: storetest.Logger(t), Interval: time.Minute}
}

// restart restarts the control plane (its store and log) and the witness,
// which keeps what it held in its file.
func (x *witnessed) restart(t *testing.T) {
	t.Helper()
	x.fixture.restart(t)
	x.src.set(audit.LocalCheckpoints{Store: x.db})
	var err error
	if x.w, err = audit.NewWitness(x.config(t)); err != nil {
		t.Fatal(err)
	}
}

func newWitnessed(t *testing.T) *witnessed {
	t.Helper()
	f := newFixture(t, sqlite)
	x := &witnessed{fixture: f, src: &swapSource{src: audit.LocalCheckpoints{Store: f.db}},
		file: filepath.Join(t.TempDir(), "gateway", "witness.json"), metrics: metrics.New()}
	cfg := x.config(t)
	cfg.FirstKey = func(context.Context) (string, error) { return f.key.VerifierKey, nil }
	var err error
	if x.w, err = audit.NewWitness(cfg); err != nil {
		t.Fatal(err)
	}
	recordFrom(t, f, 0, 20, nil)
	x.held = f.checkpoint(t)
	if err := x.w.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	x.assertHolds(t, x.held)
	return x
}

func (x *witnessed) assertHolds(t *testing.T, want audit.Checkpoint) {
	t.Helper()
	if got, ok := x.w.Held(); !ok || got != want {
		t.Fatalf("the witness holds %+v (%v), want %+v", got, ok, want)
	}
	if m := scrapeMetrics(t, x.metrics); !strings.Contains(m, "bulkhead_audit_witness_size "+strconv.FormatInt(want.Size, 10)+"\n") {
		t.Fatalf("witnessed size gauge is not %d:\n%s", want.Size, grep(m, "bulkhead_audit_witness"))
	}
}

// alerts returns the witness alerts recorded in the log.
func (x *witnessed) alerts(t *testing.T) []audit.Event {
	t.Helper()
	rows, err := x.db.Events(context.Background(), audit.Query{AfterSeq: -1, Actions: []string{audit.ActionAuditWitness}})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func scrapeMetrics(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// fork returns a log signed with the same key whose first 10 entries are
// the real ones and whose next size-10 are not.
func fork(t *testing.T, x *witnessed, size int) *fixture {
	t.Helper()
	g := newFixtureWithKey(t, sqlite, x.key)
	recordFrom(t, g, 0, 10, nil)
	recordFrom(t, g, 10, size, func(ev *audit.Event) { ev.Decision = audit.Allow; ev.Reasons = []string{"rewritten"} })
	g.checkpoint(t)
	return g
}

// TestWitnessCatchesWhatTheDatabaseHides: each attack shows the witness a
// checkpoint that does not extend the one it holds. The witness raises an
// alert (recorded, counted, logged) and keeps the checkpoint it had.
func TestWitnessCatchesWhatTheDatabaseHides(t *testing.T) {
	cases := []struct {
		name   string
		attack func(t *testing.T, x *witnessed)
		kind   string
	}{
		{name: "the log truncated and signed again", kind: audit.AlertTruncated, attack: func(t *testing.T, x *witnessed) {
			truncateTo(t, x.fixture, 15, false, 0)
			x.restart(t)
			if cp := x.checkpoint(t); cp.Size != 15 {
				t.Fatalf("re-signed at %d", cp.Size)
			}
		}},
		{name: "every checkpoint deleted", kind: audit.AlertTruncated, attack: func(t *testing.T, x *witnessed) {
			x.exec(t, `DELETE FROM audit_checkpoints`)
		}},
		{name: "a fork at the same size", kind: audit.AlertForked, attack: func(t *testing.T, x *witnessed) {
			x.src.set(audit.LocalCheckpoints{Store: fork(t, x, 20).db})
		}},
		{name: "a larger log that does not extend the held one", kind: audit.AlertInconsistent, attack: func(t *testing.T, x *witnessed) {
			x.src.set(audit.LocalCheckpoints{Store: fork(t, x, 30).db})
		}},
		{name: "a checkpoint signed by another key", kind: audit.AlertBadSignature, attack: func(t *testing.T, x *witnessed) {
			other := newFixture(t, sqlite) // a key of the same name, not the pinned one
			recordFrom(t, other, 0, 30, nil)
			other.checkpoint(t)
			x.src.set(audit.LocalCheckpoints{Store: other.db})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			x := newWitnessed(t)
			c.attack(t, x)
			err := x.w.Observe(ctx)
			var alert *audit.WitnessAlert
			if !errors.As(err, &alert) || alert.Kind != c.kind || !errors.Is(err, audit.ErrTampered) {
				t.Fatalf("observe = %v, want a %s alert", err, c.kind)
			}
			x.assertHolds(t, x.held)
			m := scrapeMetrics(t, x.metrics)
			if !strings.Contains(m, `bulkhead_audit_witness_alerts_total{kind="`+c.kind+`"} 1`) {
				t.Fatalf("alert not counted:\n%s", grep(m, "bulkhead_audit_witness"))
			}
			recs := x.alerts(t)
			if len(recs) != 1 {
				t.Fatalf("%d alerts recorded, want 1", len(recs))
			}
			ev := recs[0]
			if ev.Decision != audit.Deny || ev.Actor.ID != gatewayID || ev.Actor.Kind != audit.ActorWorkload || ev.Target != logName ||
				ev.Detail["kind"] != c.kind || ev.Detail["held_size"] != "20" || ev.Detail["held_root"] != x.held.Root.String() || len(ev.Reasons) != 1 {
				t.Fatalf("alert recorded as %+v", ev)
			}
			// The log stays broken: the witness says so at each look, but
			// records and counts each offending checkpoint once.
			if err := x.w.Observe(ctx); !errors.As(err, &alert) {
				t.Fatalf("second observe = %v", err)
			}
			if n := len(x.alerts(t)); n != 1 {
				t.Fatalf("the same checkpoint was recorded %d times", n)
			}
			// A restart does not make it forget: the file holds the
			// larger checkpoint, and the smaller one is refused again.
			w2, err := audit.NewWitness(x.config(t))
			if err != nil {
				t.Fatal(err)
			}
			if held, _ := w2.Held(); held != x.held {
				t.Fatalf("after a restart the witness holds %+v", held)
			}
			if err := w2.Observe(ctx); !errors.As(err, &alert) || alert.Kind != c.kind {
				t.Fatalf("after a restart, observe = %v", err)
			}
		})
	}
}

func TestWitnessFollowsAGrowingLog(t *testing.T) {
	ctx := context.Background()
	x := newWitnessed(t)
	// First use pinned the key and kept it with the checkpoint, privately.
	st, err := os.Stat(x.file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("witness file: %v, %v", st, err)
	}
	b, _ := os.ReadFile(x.file)
	if !strings.Contains(string(b), x.key.VerifierKey) {
		t.Fatalf("the witness file does not pin the key:\n%s", b)
	}
	// Growth with a valid consistency proof replaces the held checkpoint.
	recordFrom(t, x.fixture, 20, 37, nil)
	grown := x.checkpoint(t)
	if err := x.w.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	x.assertHolds(t, grown)
	// Nothing new: nothing changes.
	if err := x.w.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	x.assertHolds(t, grown)
	if n := len(x.alerts(t)); n != 0 {
		t.Fatalf("%d alerts on an honest log", n)
	}
	// A restart loads the file: no key to fetch, and the growth kept.
	cfg := x.config(t)
	cfg.FirstKey = func(context.Context) (string, error) { return "", errors.New("fetched a key again") }
	w2, err := audit.NewWitness(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if held, _ := w2.Held(); held != grown {
		t.Fatalf("after a restart the witness holds %+v", held)
	}
	if err := w2.Observe(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWitnessRefusesAKeyChange(t *testing.T) {
	x := newWitnessed(t)
	other, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := x.config(t)
	cfg.Key = other.VerifierKey
	if _, err := audit.NewWitness(cfg); err == nil || !strings.Contains(err.Error(), "refusing a key change") {
		t.Fatalf("a witness file pinned to another key loaded: %v", err)
	}
	// The configured key, when it is the log's, agrees with the file.
	cfg.Key = x.key.VerifierKey
	if _, err := audit.NewWitness(cfg); err != nil {
		t.Fatal(err)
	}
	// A file someone edited to hold a checkpoint the key did not sign.
	forged := strings.Replace(mustRead(t, x.file), `\n20\n`, `\n99\n`, 1)
	if forged == mustRead(t, x.file) {
		t.Fatal("no checkpoint size in the witness file to forge")
	}
	if err := os.WriteFile(x.file, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.NewWitness(x.config(t)); err == nil {
		t.Fatal("a witness file with a forged checkpoint loaded")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A log too broken to record the alert still gets it counted and logged.
func TestWitnessAlertCountsWhenTheLogCannotRecord(t *testing.T) {
	x := newWitnessed(t)
	cfg := x.config(t)
	cfg.Recorder = failingRecorder{}
	w, err := audit.NewWitness(cfg)
	if err != nil {
		t.Fatal(err)
	}
	truncateTo(t, x.fixture, 15, false, 0)
	x.checkpoint(t)
	var alert *audit.WitnessAlert
	if err := w.Observe(context.Background()); !errors.As(err, &alert) || alert.Kind != audit.AlertTruncated {
		t.Fatalf("observe = %v", err)
	}
	if m := scrapeMetrics(t, x.metrics); !strings.Contains(m, `bulkhead_audit_witness_alerts_total{kind="truncated"} 1`) {
		t.Fatalf("alert not counted:\n%s", grep(m, "bulkhead_audit_witness"))
	}
}

// Run observes on the injected clock's ticks: the test moves time, never
// sleeps through it.
func TestWitnessRunsOnTheClock(t *testing.T) {
	x := newWitnessed(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.w.Run(ctx) }()
	waitFor(t, "the witness waits for its next look", func() bool { return x.clock.Waiters() > 0 })
	recordFrom(t, x.fixture, 20, 25, nil)
	grown := x.checkpoint(t)
	x.clock.Advance(time.Minute)
	waitFor(t, "the witness holds the grown checkpoint", func() bool { cp, _ := x.w.Held(); return cp == grown })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v", err)
	}
}

// waitFor waits for cond, which other goroutines make true.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
