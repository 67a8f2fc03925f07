package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

type benchDecider struct{}

func (benchDecider) Decide(context.Context, Decision) (policy.Decision, error) {
	return policy.Decision{ID: "bench", Allowed: true, Version: 1}, nil
}

type benchRecorder struct{}

func (benchRecorder) Record(_ context.Context, ev audit.Event) (audit.Event, error) { return ev, nil }

// BenchmarkEgressProxy compares fetching from an HTTP server directly
// with fetching through the sandbox egress proxy (decision and record
// included, the record not durable here: the audit log's cost is
// measured in its own benchmarks), side by side: one small request per
// connection, and 1 MiB bodies.
func BenchmarkEgressProxy(b *testing.B) {
	big := strings.Repeat("x", 1<<20)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	g := &Gateway{cfg: &Config{Name: "bench"}, logger: storetest.Logger(b), sessions: newSessions(clock.Real{}),
		deps: Deps{Decider: benchDecider{}, Audit: benchRecorder{}, Revocations: NewRevocations(storetest.Logger(b)), Clock: clock.Real{}}}
	g.sessions.bind("tool", "s1", "spiffe://bulkhead.local/agent/alpha", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	target := strings.TrimPrefix(up.URL, "http://")
	go g.serveEgress("tool", "s1", egressConfig{allowed: []string{target}}, ln, nil)
	defer ln.Close()
	proxy, _ := url.Parse("http://" + ln.Addr().String())
	for _, c := range []struct {
		name  string
		proxy bool
	}{{"direct", false}, {"proxy", true}} {
		tr := &http.Transport{DisableKeepAlives: true}
		if c.proxy {
			tr.Proxy = http.ProxyURL(proxy)
		}
		hc := &http.Client{Transport: tr}
		get := func(b *testing.B, path string) {
			resp, err := hc.Get(up.URL + path)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		b.Run("request/"+c.name, func(b *testing.B) {
			for b.Loop() {
				get(b, "/")
			}
		})
		b.Run("1MiB/"+c.name, func(b *testing.B) {
			b.SetBytes(1 << 20)
			for b.Loop() {
				get(b, "/big")
			}
		})
	}
}
