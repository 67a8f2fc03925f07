package audit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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
// have changed: when the store's Feed says another writer committed
// (PostgreSQL LISTEN/NOTIFY), and every pollInterval in case a
// notification was lost. A local commit that directly follows the cursor
// is delivered as committed, without reading it back (the stream is the
// same; a gateway's records would otherwise each be read and decoded once
// more); any gap sends the follower to the store. It runs while the log
// has subscribers.

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

	// local holds this log's commits not yet delivered, in sequence
	// order, while the follower runs; dropped says some were let go.
	localMu sync.Mutex
	local   []Event
	dropped bool
	on      atomic.Bool
}

// maxLocal bounds the local commits held for delivery; past it the
// follower reads from the store instead.
const maxLocal = 1 << 14

// wakeUp asks the follower to read.
func (f *follower) wakeUp() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// committed hands the follower a local commit, in sequence order.
func (f *follower) committed(events []Event) {
	if !f.on.Load() {
		return
	}
	f.localMu.Lock()
	if len(f.local)+len(events) > maxLocal {
		f.local, f.dropped = nil, true // the store has them all
	} else {
		f.local = append(f.local, events...)
	}
	f.localMu.Unlock()
	f.wakeUp()
}

// takeLocal delivers the local commits that directly follow cursor and
// returns the new cursor; gap reports commits the follower has not seen
// (another writer's, or local ones it dropped): the store must be read.
func (f *follower) takeLocal(cursor int64) (next int64, gap bool) {
	f.localMu.Lock()
	local, dropped := f.local, f.dropped
	f.local, f.dropped = nil, false
	f.localMu.Unlock()
	i := 0
	for i < len(local) && local[i].Seq <= cursor {
		i++
	}
	local = local[i:]
	n := 0
	for n < len(local) && local[n].Seq == cursor+int64(n)+1 {
		n++
	}
	if n > 0 {
		f.l.bus.publish(local[:n])
		cursor = local[n-1].Seq
	}
	return cursor, dropped || n < len(local)
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
	f.on.Store(true)
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
	f.on.Store(false)
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
	// local: woken by a local commit, which takeLocal can deliver.
	local := false
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
		if gap := true; local {
			if cursor, gap = f.takeLocal(cursor); gap {
				cursor = f.read(ctx, cursor)
			}
		} else {
			cursor = f.read(ctx, cursor)
		}
		local = false
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
			local = true
		case _, ok := <-changes:
			if !ok {
				changes = nil
			}
		case <-f.l.clock.After(pollInterval):
		}
	}
}

// dropLocal forgets local commits the store has delivered.
func (f *follower) dropLocal(cursor int64) {
	f.localMu.Lock()
	defer f.localMu.Unlock()
	i := 0
	for i < len(f.local) && f.local[i].Seq <= cursor {
		i++
	}
	f.local = f.local[i:]
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
		f.dropLocal(cursor)
		if len(rows) < followPage {
			return cursor
		}
	}
}
