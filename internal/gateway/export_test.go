package gateway

import (
	"context"
	"net/netip"
)

// SetLookup replaces how g resolves the names its sandboxes' DNS stubs
// answer, for tests whose names are not in any real DNS.
func SetLookup(g *Gateway, f func(ctx context.Context, network, host string) ([]netip.Addr, error)) {
	g.lookup = f
}

// OpenStreams is how many forwarded requests g keeps under their decision.
func OpenStreams(g *Gateway) int { return g.streams.count() }

// StreamsIdle reports that no re-decision of g's streams is under way.
func StreamsIdle(g *Gateway) bool {
	g.streams.mu.Lock()
	defer g.streams.mu.Unlock()
	for _, m := range g.streams.byAgent {
		for os := range m {
			if os.busy.Load() {
				return false
			}
		}
	}
	return true
}
