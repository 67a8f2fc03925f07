package server_test

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// scrape reads /metrics with hc and returns the value of each sample line
// (name with labels → value).
func scrape(t *testing.T, hc *http.Client, url string) (int, map[string]float64) {
	t.Helper()
	status, b := auditGet(t, hc, url)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return status, out
}

// The control plane's /metrics counts what its audit log committed, by
// action and decision, and its PDP's decisions; operators and components
// read it over mTLS, a local Prometheus over the loopback listener, and
// agents not at all.
func TestMetrics(t *testing.T) {
	env := testenv.Start(t, testenv.WithConfig(func(c *server.Config) { c.MetricsListen = "127.0.0.1:0" }))
	ctx := context.Background()
	if _, err := env.Operator.CreateAgent(ctx, "alpha", 0); err != nil {
		t.Fatal(err)
	}
	// One decision that no policy permits: deny by default.
	if d, err := env.Operator.Evaluate(ctx, toolCall("alpha", "docs/search", nil)); err != nil || d.Decision {
		t.Fatalf("evaluate: %+v %v", d, err)
	}
	local := "http://" + env.Server.MetricsAddr() + "/metrics"
	status, m := scrape(t, http.DefaultClient, local)
	if status != http.StatusOK {
		t.Fatalf("loopback /metrics: %d", status)
	}
	for name, min := range map[string]float64{
		`bulkhead_audit_events_total{action="agent.create",decision="allow"}`: 1,
		`bulkhead_audit_events_total{action="pdp.decision",decision="deny"}`:  1,
		`bulkhead_audit_commits_total{result="ok"}`:                           1,
		`bulkhead_pdp_decisions_total{decision="deny"}`:                       1,
		`bulkhead_pdp_decision_seconds_count`:                                 1,
		`bulkhead_audit_commit_events_count`:                                  1,
	} {
		if m[name] < min {
			t.Errorf("%s = %v, want at least %v", name, m[name], min)
		}
	}
	if v, ok := m["bulkhead_standing_grants"]; !ok || v != 0 {
		t.Errorf("bulkhead_standing_grants = %v (present %v), want 0", v, ok)
	}
	if _, ok := m["bulkhead_policy_live_version"]; !ok {
		t.Error("bulkhead_policy_live_version missing")
	}
	if _, ok := m["bulkhead_audit_journal_backlog"]; !ok {
		t.Error("bulkhead_audit_journal_backlog missing")
	}
	// No agent names in labels: the label values are fixed vocabularies.
	for name := range m {
		if strings.Contains(name, "alpha") {
			t.Errorf("a metric names an agent: %s", name)
		}
	}

	// On the HTTPS listener: operators yes, agents and anonymous callers no.
	https := env.URL + "/metrics"
	if status, _ := scrape(t, env.Operator.HTTPClient(), https); status != http.StatusOK {
		t.Fatalf("operator /metrics: %d", status)
	}
	agent := env.Client(env.Enroll("beta"))
	if status, _ := scrape(t, agent.HTTPClient(), https); status != http.StatusForbidden {
		t.Fatalf("agent /metrics: %d, want 403", status)
	}
	if status, _ := scrape(t, publicClient(t, env.Server.BundlePEM()), https); status != http.StatusUnauthorized {
		t.Fatalf("anonymous /metrics: %d, want 401", status)
	}
}

// The plain-HTTP metrics listener serves loopback only.
func TestMetricsListenMustBeLoopback(t *testing.T) {
	cfg := server.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", MetricsListen: "0.0.0.0:0"}
	srv, err := server.New(context.Background(), cfg, clock.Real{}, storetest.Logger(t))
	if err == nil {
		err = srv.Listen()
	}
	if err == nil || !regexp.MustCompile(`refusing to listen on "0\.0\.0\.0:0"`).MatchString(err.Error()) {
		t.Fatalf("non-loopback metrics listener: %v", err)
	}
}
