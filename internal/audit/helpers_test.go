package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

const logName = "test.local/audit"

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// fixture is a log over a real store with its key and checkpointer.
type fixture struct {
	// dsn and dir open db again (restart).
	dsn, dir string
	db       *store.DB
	log      *audit.Log
	key      audit.Key
	cp       *audit.Checkpointer
	clock    *clock.Fake
}

func newFixture(t testing.TB, b storetest.Backend) *fixture {
	t.Helper()
	key, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureWithKey(t, b, key)
}

func newFixtureWithKey(t testing.TB, b storetest.Backend, key audit.Key) *fixture {
	t.Helper()
	f := &fixture{clock: clock.NewFake(t0), key: key}
	f.dsn, f.dir = b.DSN(t)
	f.open(t)
	return f
}

func (f *fixture) open(t testing.TB) {
	t.Helper()
	db, err := store.Open(context.Background(), f.dsn, f.dir, storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f.db = db
	f.log = audit.New(f.db, f.clock, storetest.Logger(t))
	f.cp, err = audit.NewCheckpointer(audit.CheckpointerConfig{Store: f.db, Key: f.key, Clock: f.clock, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
}

// restart closes the store and opens it again, as a control plane that
// restarts does. A running control plane refuses a log changed behind its
// back at its next append (its audit journal knows where the log ends);
// attacks that need it to carry on over a changed database are staged
// across a restart.
func (f *fixture) restart(t testing.TB) {
	t.Helper()
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t)
}

// event returns a varied, realistic event.
func event(i int) audit.Event {
	actions := []string{audit.ActionAgentCreate, audit.ActionSVIDIssue, audit.ActionSVIDRenew, audit.ActionAPIAccess}
	decisions := []audit.Decision{audit.Allow, audit.Allow, audit.Deny}
	agent := fmt.Sprintf("spiffe://test.local/agent/a%d", i%5)
	return audit.Event{Time: t0.Add(time.Duration(i) * time.Second), Action: actions[i%len(actions)],
		Actor:  audit.Actor{Kind: audit.ActorOperator, ID: "spiffe://test.local/operator/admin"},
		Target: agent, Decision: decisions[i%len(decisions)], Reasons: []string{fmt.Sprintf("reason %d", i)},
		Digests: map[string]string{"csr": audit.Digest([]byte(fmt.Sprint(i)))},
		Detail:  map[string]string{"serial": fmt.Sprintf("%08x", i)}}
}

// record appends n events, in batches of batch through the log.
func (f *fixture) record(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := f.log.Record(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) checkpoint(t testing.TB) audit.Checkpoint {
	t.Helper()
	cp, err := f.cp.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func (f *fixture) verify(t testing.TB, saved ...[]byte) (audit.Report, error) {
	t.Helper()
	return audit.Verify(context.Background(), f.db, audit.VerifyOptions{Verifier: f.key.Verifier, Saved: saved})
}

// exec runs SQL straight against the store, behind the log's back.
func (f *fixture) exec(t testing.TB, q string, args ...any) {
	t.Helper()
	if f.db.Dialect() == "postgres" {
		q = pgPlaceholders(q)
	}
	if _, err := f.db.SQL().Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func pgPlaceholders(q string) string {
	out, n := []byte{}, 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = append(out, fmt.Sprintf("$%d", n)...)
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}

func (f *fixture) body(t testing.TB, seq int64) []byte {
	t.Helper()
	rows, err := f.db.Events(context.Background(), audit.Query{AfterSeq: seq - 1, Limit: 1})
	if err != nil || len(rows) == 0 || rows[0].Seq != seq {
		t.Fatalf("read entry %d: %v", seq, err)
	}
	return rows[0].Body
}

// badIndex returns the first bad index Verify named, failing the test if
// it did not fail with a VerifyError.
func badIndex(t testing.TB, err error) *audit.VerifyError {
	t.Helper()
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("verify = %v, want a VerifyError", err)
	}
	return ve
}

// memStore is an in-memory ArchiveStore: a fake for tests that do not need
// a database.
type memStore struct {
	rows   []audit.Row
	hashes map[int64]tlog.Hash
	tree   *audit.Frontier
}

func newMemStore(t testing.TB, n int) *memStore {
	t.Helper()
	m := &memStore{hashes: map[int64]tlog.Hash{}}
	m.tree, _ = audit.NewFrontier(0, nil)
	for i := 0; i < n; i++ {
		ev := event(i)
		body, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		hs, err := m.tree.AppendRecord(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			m.hashes[h.Index] = h.Hash
		}
		m.rows = append(m.rows, audit.Row{Seq: int64(i), Time: ev.Time, Action: ev.Action, Body: body})
	}
	return m
}

func (m *memStore) TreeState(context.Context) (audit.TreeState, error) {
	return audit.TreeState{Size: m.tree.Size()}, nil
}

func (m *memStore) ReadHashes(_ context.Context, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memStore) Events(_ context.Context, q audit.Query) ([]audit.Row, error) {
	var out []audit.Row
	for _, r := range m.rows {
		if r.Seq > q.AfterSeq && (q.Limit == 0 || len(out) < q.Limit) {
			out = append(out, r)
		}
	}
	return out, nil
}

// sign returns a signed checkpoint of the whole tree.
func (m *memStore) sign(t testing.TB, key audit.Key) ([]byte, audit.Checkpoint) {
	t.Helper()
	r, err := m.tree.Root()
	if err != nil {
		t.Fatal(err)
	}
	cp := audit.Checkpoint{Origin: key.Signer.Name(), Size: m.tree.Size(), Root: r}
	msg, err := cp.Sign(key.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return msg, cp
}
