package webhook_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/audit/ocsf"
	"github.com/bulkhead-dev/bulkhead/internal/audit/webhook"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// receiver is a SIEM collector that can be taken down.
type receiver struct {
	down  atomic.Bool
	fails atomic.Int64
	mu    sync.Mutex
	seqs  []int64 // every sequence number received, in arrival order
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.down.Load() {
		r.fails.Add(1)
		http.Error(w, "collector down", http.StatusServiceUnavailable)
		return
	}
	if req.Header.Get("Content-Type") != "application/x-ndjson" || req.Header.Get("Idempotency-Key") == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	sc := bufio.NewScanner(req.Body)
	var got []int64
	for sc.Scan() {
		var e ocsf.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.ClassUID == 0 {
			http.Error(w, "not OCSF", http.StatusBadRequest)
			return
		}
		got = append(got, e.Metadata.Sequence)
	}
	r.mu.Lock()
	r.seqs = append(r.seqs, got...)
	r.mu.Unlock()
}

// distinct returns the sequence numbers received, duplicates (allowed:
// delivery is at least once) removed, checking they arrived in order.
func (r *receiver) distinct(t *testing.T) []int64 {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, s := range r.seqs {
		if n := len(out); n > 0 && s <= out[n-1] {
			if s < out[n-1]-int64(webhook.DefaultBatch) {
				t.Fatalf("event %d arrived after %d: out of order", s, out[n-1])
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

func (r *receiver) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(r.distinct(t)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d events", len(r.distinct(t)), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func record(t *testing.T, l *audit.Log, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://test.local/agent/a"},
			Action: audit.ActionSVIDRenew, Target: fmt.Sprint(i), Decision: audit.Allow}
		if _, err := l.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNothingIsLostWhileTheReceiverIsDown records events while the
// receiver refuses them, brings it back, restarts the sink half-way, and
// checks that the receiver ends up with every event, in order.
func TestNothingIsLostWhileTheReceiverIsDown(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			l := audit.New(db, clock.Real{}, storetest.Logger(t))
			rcv := &receiver{}
			rcv.down.Store(true)
			srv := httptest.NewServer(rcv)
			defer srv.Close()
			newSink := func() *webhook.Sink {
				s, err := webhook.New(webhook.Config{URL: srv.URL + "/ingest?token=secret", Store: db, Log: l, Clock: clock.Real{},
					Logger: storetest.Logger(t), Batch: 7, Poll: 20 * time.Millisecond,
					MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			run := func(s *webhook.Sink) (stop func()) {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { s.Run(ctx); close(done) }()
				return func() { cancel(); <-done }
			}

			sink := newSink()
			if sink.Name() != "webhook:"+srv.URL+"/ingest" {
				t.Fatalf("cursor name %q carries the URL's query", sink.Name())
			}
			stop := run(sink)
			record(t, l, 0, 30)
			for rcv.fails.Load() < 3 { // the receiver refuses a few retries
				time.Sleep(5 * time.Millisecond)
			}
			if cur, _ := db.Cursor(context.Background(), sink.Name()); cur != -1 {
				t.Fatalf("cursor moved to %d while the receiver was down", cur)
			}
			rcv.down.Store(false)
			rcv.waitFor(t, 30)

			// The control plane restarts; events committed meanwhile are
			// delivered by the new sink from the durable cursor.
			stop()
			record(t, l, 30, 50)
			stop = run(newSink())
			defer stop()
			record(t, l, 50, 60)
			rcv.waitFor(t, 60)
			got := rcv.distinct(t)
			for i, s := range got {
				if s != int64(i) {
					t.Fatalf("received %v: event %d missing", got, i)
				}
			}
		})
	}
}

func TestConfigIsChecked(t *testing.T) {
	db := storetest.Backends()[0].Open(t)
	base := webhook.Config{URL: "https://siem.example/ingest", Store: db, Clock: clock.Real{}, Logger: storetest.Logger(t)}
	cases := []struct {
		name string
		edit func(*webhook.Config)
	}{
		{"relative URL", func(c *webhook.Config) { c.URL = "/ingest" }},
		{"ftp URL", func(c *webhook.Config) { c.URL = "ftp://siem.example/" }},
		{"unknown format", func(c *webhook.Config) { c.Format = "cef" }},
		{"no store", func(c *webhook.Config) { c.Store = nil }},
	}
	if _, err := webhook.New(base); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.edit(&cfg)
			if _, err := webhook.New(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// An alert sink delivers only its actions, on a cursor of its own beside
// the full stream's to the same receiver.
func TestAlertSinkDeliversOnlyItsActions(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			l := audit.New(db, clock.Real{}, storetest.Logger(t))
			rcv := &receiver{}
			srv := httptest.NewServer(rcv)
			defer srv.Close()
			sink, err := webhook.New(webhook.Config{URL: srv.URL, Store: db, Clock: clock.Real{}, Logger: storetest.Logger(t),
				Actions: []string{"gateway.anomaly"}})
			if err != nil {
				t.Fatal(err)
			}
			if sink.Name() != "webhook[gateway.anomaly]:"+srv.URL {
				t.Fatalf("cursor name %q", sink.Name())
			}
			record(t, l, 0, 5)
			anomaly := audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://test.local/agent/a"},
				Action: "gateway.anomaly", Target: `Tool::"files/read_file"`, Decision: audit.Allow, Detail: map[string]string{"risk": "70"}}
			if _, err := l.Record(context.Background(), anomaly); err != nil {
				t.Fatal(err)
			}
			record(t, l, 5, 8)
			if n, err := sink.Deliver(context.Background()); n != 1 || err != nil {
				t.Fatalf("delivered %d: %v", n, err)
			}
			if got := rcv.distinct(t); len(got) != 1 || got[0] != 5 {
				t.Fatalf("received %v, want the anomaly (seq 5) alone", got)
			}
			if n, err := sink.Deliver(context.Background()); n != 0 || err != nil {
				t.Fatalf("delivered again %d: %v", n, err)
			}
		})
	}
}
