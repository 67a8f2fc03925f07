// Package webhook streams the audit log to an HTTP receiver, such as a
// SIEM's collector, in order and at least once.
//
// The sink reads committed events from the store, never from memory, and
// keeps a durable cursor there: the seq of the last event the receiver
// acknowledged with a 2xx. A receiver that is down, or a control plane that
// restarts, therefore loses nothing; delivery resumes after the cursor, with
// retries backing off while the receiver fails. Receivers deduplicate by
// event seq (the OCSF metadata.sequence), since a batch whose
// acknowledgement was lost is sent again.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/audit/ocsf"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// Store reads events and keeps the sink's cursor.
type Store interface {
	audit.Reader
	// Cursor returns the seq of the last delivered event, -1 for none.
	Cursor(ctx context.Context, name string) (int64, error)
	// AdvanceCursor moves the cursor forward (never back) to seq.
	AdvanceCursor(ctx context.Context, name string, seq int64, at time.Time) error
}

// Defaults.
const (
	DefaultBatch      = 500
	DefaultPoll       = 2 * time.Second
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
)

// Config configures a Sink.
type Config struct {
	// URL receives POSTs of JSON lines (application/x-ndjson). Required.
	URL    string
	Format ocsf.Format // default ocsf
	Mapper ocsf.Mapper
	Store  Store        // required
	Clock  clock.Clock  // required
	Logger *slog.Logger // required
	// Log, if set, wakes the sink as soon as events commit here; Poll
	// still picks up events that other replicas commit.
	Log *audit.Log
	// Client sends the requests; default one with a 30s timeout.
	Client *http.Client
	// Name keys the cursor; default "webhook:" + the URL without its
	// credentials and query, so changing the receiver starts a new cursor.
	Name string
	// Actions, if set, are the only actions delivered (an alert sink's
	// gateway.anomaly); the cursor still moves past the others.
	Actions []string
	// Batch is the most events per request (default DefaultBatch).
	Batch int
	// Poll is how often an idle sink looks for new events.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts.
	MinBackoff, MaxBackoff time.Duration
}

// Sink delivers the log to one receiver.
type Sink struct {
	cfg Config
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Sink, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("webhook: URL %q must be an absolute http(s) URL", cfg.URL)
	}
	if cfg.Store == nil || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("webhook: a store, a clock and a logger are required")
	}
	if cfg.Format == "" {
		cfg.Format = ocsf.FormatOCSF
	}
	if _, err := ocsf.ParseFormat(string(cfg.Format)); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		kind := "webhook"
		if len(cfg.Actions) > 0 {
			// A filtered sink keeps a cursor of its own, even to the
			// same receiver.
			kind += "[" + strings.Join(cfg.Actions, ",") + "]"
		}
		cfg.Name = kind + ":" + (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	return &Sink{cfg: cfg}, nil
}

// Name is the sink's cursor name.
func (s *Sink) Name() string { return s.cfg.Name }

// Run delivers until ctx ends. Delivery failures are logged and retried;
// they never stop the control plane.
func (s *Sink) Run(ctx context.Context) error {
	var (
		wake   <-chan audit.Event
		cancel = func() {}
	)
	subscribe := func() {
		cancel()
		if s.cfg.Log != nil {
			// Only a wake-up: one buffered slot is enough, and the
			// subscription is renewed when the bus drops it.
			wake, cancel = s.cfg.Log.Subscribe(nil, 1)
		}
	}
	subscribe()
	defer func() { cancel() }()
	backoff := time.Duration(0)
	for {
		n, err := s.Deliver(ctx)
		var wait <-chan time.Time
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
			s.cfg.Logger.Warn("audit webhook delivery failed; will retry", "sink", s.cfg.Name, "retry_in", backoff, "err", err)
			wait = s.cfg.Clock.After(backoff)
		case n == s.cfg.Batch:
			backoff = 0
			continue // more are waiting
		default:
			backoff = 0
			wait = s.cfg.Clock.After(s.cfg.Poll)
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return nil
			case _, ok := <-wake:
				if !ok {
					subscribe()
				}
				if err == nil { // a failing receiver waits out its backoff
					waiting = false
				}
			case <-wait:
				waiting = false
			}
		}
	}
}

// Deliver sends the next batch after the cursor, if any, and advances the
// cursor when the receiver acknowledges it. It returns how many events were
// delivered.
func (s *Sink) Deliver(ctx context.Context) (int, error) {
	cur, err := s.cfg.Store.Cursor(ctx, s.cfg.Name)
	if err != nil {
		return 0, err
	}
	rows, err := s.cfg.Store.Events(ctx, audit.Query{AfterSeq: cur, Limit: s.cfg.Batch, Actions: s.cfg.Actions})
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	var body bytes.Buffer
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil {
			return 0, err
		}
		line, err := s.cfg.Mapper.Line(s.cfg.Format, ev)
		if err != nil {
			return 0, err
		}
		body.Write(line)
		body.WriteByte('\n')
	}
	first, last := rows[0].Seq, rows[len(rows)-1].Seq
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, &body)
	if err != nil {
		return 0, fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Bulkhead-Audit-First-Seq", strconv.FormatInt(first, 10))
	req.Header.Set("Bulkhead-Audit-Last-Seq", strconv.FormatInt(last, 10))
	// The same batch always carries the same key, so a receiver can drop
	// a retry of a batch it already took.
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s/%d-%d", s.cfg.Name, first, last))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("webhook: POST: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return 0, fmt.Errorf("webhook: receiver answered %s", resp.Status)
	}
	if err := s.cfg.Store.AdvanceCursor(ctx, s.cfg.Name, last, s.cfg.Clock.Now()); err != nil {
		return 0, err
	}
	return len(rows), nil
}
