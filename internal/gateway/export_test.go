package gateway

import (
	"context"
	"net/netip"
	"time"
)

// SetLookup replaces how g resolves the names its sandboxes' DNS stubs
// answer, for tests whose names are not in any real DNS.
func SetLookup(g *Gateway, f func(ctx context.Context, network, host string) ([]netip.Addr, error)) {
	g.lookup = f
}

// OpenStreams is how many forwarded requests g keeps under their decision.
func OpenStreams(g *Gateway) int { return g.streams.count() }

// RecheckNow decides every open stream of g again, before it returns.
func RecheckNow(g *Gateway) {
	g.streams.mu.Lock()
	var list []*openStream
	for _, m := range g.streams.byAgent {
		for os := range m {
			list = append(list, os)
		}
	}
	g.streams.mu.Unlock()
	for _, os := range list {
		g.recheck(os)
	}
}

// SetRecheckRetry shortens how streams whose re-decision fails are
// retried, for tests; it returns the restore.
func SetRecheckRetry(every time.Duration, max int64) func() {
	oldEvery, oldMax := recheckRetry.Load(), maxRecheckFailures.Load()
	recheckRetry.Store(int64(every))
	maxRecheckFailures.Store(max)
	return func() { recheckRetry.Store(oldEvery); maxRecheckFailures.Store(oldMax) }
}
