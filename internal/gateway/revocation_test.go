package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// brokenFeed delivers its events, reports the backlog read when up, then
// breaks; each Follow takes the next outcome. A feed that broke after
// catching up is resumed at once, without a retry.
type brokenFeed struct {
	up     []bool
	events []audit.Event
	calls  int
}

func (f *brokenFeed) Follow(_ context.Context, after int64, _ []string, apply func(audit.Event), caughtUp func()) error {
	up := f.calls < len(f.up) && f.up[f.calls]
	f.calls++
	if !up {
		return errors.New("connection refused")
	}
	for _, ev := range f.events {
		if ev.Seq > after {
			apply(ev)
		}
	}
	caughtUp()
	return errors.New("stream ended")
}

// A gateway whose feed no replica answers keeps serving on its cached
// state for the bound, marking it stale, then refuses everyone; a feed
// that is back makes it current again.
func TestRevocationsFailClosedPastTheStalenessBound(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	rev := NewRevocations(slog.New(slog.NewTextHandler(io.Discard, nil))).Bound(clk, 30*time.Second)
	feed := &brokenFeed{up: []bool{true, false, false, true, false}, events: []audit.Event{
		{Seq: 1, Action: audit.ActionAgentRevoke, Target: "spiffe://td/agent/bad", Decision: audit.Allow}}}
	good := &token.Claims{}
	good.Subject = "spiffe://td/agent/good"
	steps := 0
	retry := func(context.Context) bool {
		steps++
		switch steps {
		case 1: // first break: still within the bound
			if err := rev.Check("01", good); err != nil {
				t.Fatalf("refused within the bound: %v", err)
			}
			if _, stale := rev.Stale(); !stale {
				t.Fatal("a broken feed is not reported stale")
			}
			clk.Advance(31 * time.Second)
		case 2: // past the bound: everyone is refused
			if err := rev.Check("01", good); err == nil || !strings.Contains(err.Error(), "revocation feed") {
				t.Fatalf("served past the bound: %v", err)
			}
		case 3: // it came back, and broke again just now: current again
			if err := rev.Check("01", good); err != nil {
				t.Fatalf("refused once the feed was back: %v", err)
			}
			if age, _ := rev.Stale(); age != 0 {
				t.Fatalf("stale for %s after catching up", age)
			}
			return false
		}
		return true
	}
	if err := rev.Feed(context.Background(), feed, retry); err != nil {
		t.Fatal(err)
	}
	if steps != 3 {
		t.Fatalf("%d retries, want 3", steps)
	}
	bad := &token.Claims{}
	bad.Subject = "spiffe://td/agent/bad"
	if err := rev.Check("02", bad); err == nil {
		t.Fatal("a revoked agent was served")
	}
}
