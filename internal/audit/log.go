package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// Row is an encoded event as the store keeps it: the canonical body plus the
// columns that searches filter on.
type Row struct {
	Seq       int64
	Time      time.Time
	ActorKind string
	ActorID   string
	Action    string
	Target    string
	Decision  string
	Task      string
	// DecisionID is the detail "decision_id" of the event, if any.
	DecisionID string
	Body       []byte
}

// RowOf is the row that stores ev, whose canonical encoding is body.
func RowOf(ev Event, body []byte) Row {
	return Row{
		Seq: ev.Seq, Time: ev.Time, ActorKind: string(ev.Actor.Kind), ActorID: ev.Actor.ID,
		Action: ev.Action, Target: ev.Target, Decision: string(ev.Decision),
		Task: ev.Task, DecisionID: ev.Detail["decision_id"], Body: body,
	}
}

// Store is the durable, append-only home of the log.
type Store interface {
	// AppendEvents commits rows in one transaction, in order, assigning them
	// consecutive sequence numbers, and returns the first number assigned.
	AppendEvents(ctx context.Context, rows []Row) (first int64, err error)
}

// ErrUnavailable is returned when an event could not be committed. Callers
// must refuse the action the event describes.
var ErrUnavailable = errors.New("audit: log unavailable")

// maxBatch bounds one group commit so that a burst does not build one huge
// transaction.
const maxBatch = 1024

// commitTimeout bounds how long a batch may take. A batch carries many
// callers' events, so it does not use any one caller's context.
const commitTimeout = 30 * time.Second

// Log appends events with group commit: concurrent Record calls that arrive
// while a commit is in flight are committed together in the next one, so
// durability costs one transaction per batch rather than per event.
type Log struct {
	store  Store
	clock  clock.Clock
	logger *slog.Logger
	bus    bus
	// follow, when the store can be read, delivers to subscribers what
	// any writer committed (see follow.go).
	follow *follower

	mu       sync.Mutex
	queue    []*pending
	flushing bool
	observer CommitObserver
}

// CommitObserver hears of every group commit: its events, how long it took
// and whether it failed (then the actions the events describe were
// refused).
type CommitObserver interface {
	Committed(events []Event, took time.Duration, err error)
}

// Observe makes o hear of every commit. Call it before the log is used.
func (l *Log) Observe(o CommitObserver) { l.observer = o }

type pending struct {
	row  Row
	ev   Event
	done chan error
}

// New returns a log over store. store, clk and logger are required.
func New(store Store, clk clock.Clock, logger *slog.Logger) *Log {
	l := &Log{store: store, clock: clk, logger: logger}
	if r, ok := store.(Reader); ok {
		l.follow = &follower{l: l, reader: r, wake: make(chan struct{}, 1)}
	}
	return l
}

// Record commits ev durably and returns it with Seq set. It returns an error
// wrapping ErrUnavailable if the event was not committed; the caller must then
// not perform the action. A zero Time is set from the log's clock.
func (l *Log) Record(ctx context.Context, ev Event) (Event, error) {
	if ev.Time.IsZero() {
		ev.Time = l.clock.Now()
	}
	ev.Time = ev.Time.UTC()
	ev.Seq = 0
	if err := ev.Validate(); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	body, err := ev.Encode()
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	p := &pending{ev: ev, done: make(chan error, 1), row: RowOf(ev, body)}
	l.mu.Lock()
	l.queue = append(l.queue, p)
	lead := !l.flushing
	l.flushing = true
	l.mu.Unlock()
	if lead {
		l.flush()
	}
	select {
	case err := <-p.done:
		if err != nil {
			return Event{}, err
		}
		return p.ev, nil
	case <-ctx.Done():
		// The event may still be committed; the action is refused anyway,
		// so the log can only over-report, never under-report.
		return Event{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// flush commits queued events until the queue is empty. Exactly one caller
// (the leader) runs it at a time.
func (l *Log) flush() {
	for {
		l.mu.Lock()
		n := min(len(l.queue), maxBatch)
		if n == 0 {
			l.flushing = false
			l.mu.Unlock()
			return
		}
		batch := l.queue[:n:n]
		l.queue = l.queue[n:]
		l.mu.Unlock()
		l.commit(batch)
	}
}

func (l *Log) commit(batch []*pending) {
	rows := make([]Row, len(batch))
	for i, p := range batch {
		rows[i] = p.row
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	// Real time, not the injected clock: this is a latency figure.
	start := time.Now()
	first, err := l.store.AppendEvents(ctx, rows)
	took := time.Since(start)
	cancel()
	committed := make([]Event, len(batch))
	for i, p := range batch {
		committed[i] = p.ev
	}
	if err != nil {
		l.logger.Error("audit commit failed; refusing the actions it describes", "events", len(batch), "err", err)
		if l.observer != nil {
			l.observer.Committed(committed, took, err)
		}
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	for i, p := range batch {
		p.ev.Seq = first + int64(i)
		committed[i].Seq = p.ev.Seq
		p.done <- nil
	}
	if l.observer != nil {
		l.observer.Committed(committed, took, nil)
	}
	if l.follow != nil {
		l.follow.committed(committed)
		return
	}
	l.bus.publish(committed)
}

// Subscribe returns a channel that receives, in sequence order, every event
// committed after the call — by this process or, when the store can be
// read, by any replica writing to it — for which match returns true (all
// events if match is nil). If the subscriber falls more than buf events
// behind, the channel is closed: a subscriber that must not miss events (a
// gateway watching revocations) then catches up from the store and
// subscribes again. cancel releases the subscription.
func (l *Log) Subscribe(match func(Event) bool, buf int) (events <-chan Event, cancel func()) {
	ch, drop := l.bus.subscribe(match, buf)
	if l.follow == nil {
		return ch, drop
	}
	l.follow.start()
	return ch, func() {
		drop()
		l.follow.haltIf(l.bus.empty)
	}
}

// Query selects committed events. Every set field narrows the selection.
type Query struct {
	// AfterSeq selects events with Seq > AfterSeq; -1 selects from the start.
	AfterSeq int64
	// Actions, if set, selects only these actions.
	Actions []string
	// Limit caps the number of events; 0 means no cap.
	Limit int
	// Subject selects events whose actor or target is this ID: everything
	// an agent did and everything done to it.
	Subject string
	// Decision selects events with this decision.
	Decision Decision
	// DecisionID selects the records of one decision (detail
	// "decision_id"): the id an agent is given when it is refused.
	DecisionID string
	// Since and Until bound the event time: Since <= Time < Until.
	Since, Until time.Time
	// Newest selects the last Limit matching events rather than the first;
	// they are still returned in sequence order.
	Newest bool
}

// Reader reads committed events in sequence order.
type Reader interface {
	Events(ctx context.Context, q Query) ([]Row, error)
}

// EventFromRow decodes a stored row.
func EventFromRow(r Row) (Event, error) {
	ev, err := Decode(r.Body)
	if err != nil {
		return Event{}, fmt.Errorf("audit: event %d: %w", r.Seq, err)
	}
	ev.Seq = r.Seq
	return ev, nil
}
