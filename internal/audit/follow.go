package audit

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Several replicas append to one log (PostgreSQL). An event reaches a
// replica's subscribers — its event stream, its in-process gateway's
// revocation state, its webhook — because the replica reads it from the
// store, in sequence order, not because the replica committed it: every
// replica serves the same ordered stream, and a resume point is a position
// in it. Appends are serialized by the store, so a reader that has seen
// sequence n never sees a smaller one appear later.
//
// A follower reads what was committed after its cursor whenever it may
// have changed: after a local commit, when the store's Feed says another
// writer committed (PostgreSQL LISTEN/NOTIFY), and every pollInterval in
// case a notification was lost. It runs while the log has subscribers.

// Feed reports commits by any writer of the store.
type Feed interface {
	// Changes returns a channel that receives after commits by any
	// writer. It is closed if the feed fails; the follower then polls and
	// asks again.
	Changes(ctx context.Context) (<-chan struct{}, error)
}

// ErrNoFeed is Feed.Changes's answer when the store has no other writers
// to hear of: the log's own commits wake its followers.
var ErrNoFeed = errors.New("audit: no change feed")

// pollInterval bounds how late a follower is when a notification is lost.
const pollInterval = time.Second

// followPage is how many events a follower reads per query.
const followPage = 1000

type follower struct {
	l      *Log
	reader Reader

	mu      sync.Mutex
	running bool
	stop    context.CancelFunc
	done    chan struct{}
	wake    chan struct{}
}

// wakeUp asks the follower to read.
func (f *follower) wakeUp() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// start runs the follower if it is not running. Its starting point is
// read before start returns, so every event committed after a Subscribe
// returns is delivered.
func (f *follower) start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	qctx, qcancel := context.WithTimeout(ctx, commitTimeout)
	cursor, err := f.latest(qctx)
	qcancel()
	if err != nil {
		cursor = unknownCursor
	}
	f.running, f.stop, f.done = true, cancel, make(chan struct{})
	go f.run(ctx, f.done, cursor)
}

// unknownCursor means the follower could not read the log's head yet.
const unknownCursor = -2

// haltIf stops the follower if idle (nobody listens) still holds once no
// start can race with it.
func (f *follower) haltIf(idle func() bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running || !idle() {
		return
	}
	f.running = false
	f.stop()
	// Held until it has stopped, so a follower started next never
	// overlaps it.
	<-f.done
}

func (f *follower) run(ctx context.Context, done chan struct{}, cursor int64) {
	defer close(done)
	var err error
	for cursor == unknownCursor {
		// Without a starting point nothing can be delivered in order; the
		// subscribers wait (a gateway then serves nothing new).
		f.l.logger.Error("audit follower: cannot read the log's head; retrying")
		select {
		case <-ctx.Done():
			return
		case <-f.l.clock.After(pollInterval):
		}
		if cursor, err = f.latest(ctx); err != nil {
			cursor = unknownCursor
		}
	}
	var changes <-chan struct{}
	feed, _ := f.l.store.(Feed)
	for {
		if changes == nil && feed != nil {
			switch c, err := feed.Changes(ctx); {
			case err == nil:
				changes = c
			case errors.Is(err, ErrNoFeed):
				feed = nil
			case ctx.Err() == nil:
				f.l.logger.Warn("audit follower: no change feed; polling until it is back", "err", err)
			}
		}
		cursor = f.read(ctx, cursor)
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case _, ok := <-changes:
			if !ok {
				changes = nil
			}
		case <-f.l.clock.After(pollInterval):
		}
	}
}

// latest is the sequence number of the newest event, -1 for none.
func (f *follower) latest(ctx context.Context) (int64, error) {
	rows, err := f.reader.Events(ctx, Query{AfterSeq: -1, Newest: true, Limit: 1})
	if err != nil || len(rows) == 0 {
		return -1, err
	}
	return rows[0].Seq, nil
}

// read delivers the events after cursor and returns the new cursor.
func (f *follower) read(ctx context.Context, cursor int64) int64 {
	for {
		rows, err := f.reader.Events(ctx, Query{AfterSeq: cursor, Limit: followPage})
		if err != nil {
			if ctx.Err() == nil {
				f.l.logger.Error("audit follower: read", "after", cursor, "err", err)
			}
			return cursor
		}
		events := make([]Event, 0, len(rows))
		for _, r := range rows {
			ev, err := EventFromRow(r)
			if err != nil {
				// A row the log cannot decode is tampering or corruption:
				// stop here rather than skip it (verify names it).
				f.l.logger.Error("audit follower: undecodable event; stopping delivery", "seq", r.Seq, "err", err)
				return cursor
			}
			events = append(events, ev)
			cursor = r.Seq
		}
		f.l.bus.publish(events)
		if len(rows) < followPage {
			return cursor
		}
	}
}
