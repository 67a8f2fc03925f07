package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// A caller that makes up actions (an HTTP method of its own) cannot grow
// the registry without bound: past maxActions they count as "other".
func TestActionLabelsAreBounded(t *testing.T) {
	m := New()
	var evs []audit.Event
	for i := 0; i < maxActions+50; i++ {
		evs = append(evs, audit.Event{Action: fmt.Sprintf("gateway.M%d", i), Decision: audit.Deny})
	}
	m.Committed(evs, time.Millisecond, nil)
	out := scrape(t, m)
	if n := strings.Count(out, "bulkhead_audit_events_total{"); n != maxActions+1 {
		t.Fatalf("%d action series, want %d", n, maxActions+1)
	}
	if !strings.Contains(out, `bulkhead_audit_events_total{action="other",decision="deny"} 50`) {
		t.Fatal("the actions past the bound are not counted as other")
	}
}

// A failed commit is counted as failed, and its events are not counted as
// committed.
func TestFailedCommitIsNotCountedAsEvents(t *testing.T) {
	m := New()
	m.Committed([]audit.Event{{Action: "token.issue", Decision: audit.Allow}}, time.Millisecond, errors.New("disk full"))
	out := scrape(t, m)
	if !strings.Contains(out, `bulkhead_audit_commits_total{result="failed"} 1`) || strings.Contains(out, `action="token.issue"`) {
		t.Fatalf("after a failed commit:\n%s", out)
	}
}

// A gauge whose read fails is left out of the scrape, never reported with
// a made-up value, and the rest of the scrape is still served.
func TestFailingGaugeIsLeftOut(t *testing.T) {
	m := New()
	m.GaugeFunc("bulkhead_test_ok", "ok", func(context.Context) (float64, error) { return 3, nil })
	m.GaugeFunc("bulkhead_test_broken", "broken", func(context.Context) (float64, error) { return 0, errors.New("store down") })
	out := scrape(t, m)
	if !strings.Contains(out, "bulkhead_test_ok 3") || strings.Contains(out, "bulkhead_test_broken ") {
		t.Fatalf("scrape:\n%s", out)
	}
}
