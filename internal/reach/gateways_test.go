package reach_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// A gateway describes only itself: a start record for gateway "edge" made
// by an agent, by another gateway or by a name that is no identity is
// ignored; the one the gateway made counts.
func TestOnlyAGatewayDescribesItself(t *testing.T) {
	db := storetest.SQLite.Open(t)
	l := audit.New(db, clock.Real{}, storetest.Logger(t))
	start := func(actor audit.Actor, secret string) {
		b, err := json.Marshal(api.GatewayReport{Name: "edge", Servers: []api.GatewayServerReport{{Name: "files", Credentials: []string{secret}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Record(context.Background(), audit.Event{Actor: actor, Action: "gateway.start", Decision: audit.Allow,
			Detail: map[string]string{"config": string(b)}}); err != nil {
			t.Fatal(err)
		}
	}
	start(audit.Actor{Kind: audit.ActorWorkload, ID: "spiffe://bulkhead.local/bulkhead/gateway/edge"}, "real")
	start(audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://bulkhead.local/agent/mallory"}, "forged-by-agent")
	start(audit.Actor{Kind: audit.ActorWorkload, ID: "spiffe://bulkhead.local/bulkhead/gateway/other"}, "forged-by-gateway")
	start(audit.Actor{Kind: audit.ActorWorkload, ID: "gateway/edge"}, "forged-by-name")
	got, err := reach.GatewayReports(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["edge"].Servers[0].Credentials[0] != "real" {
		t.Fatalf("reports: %+v", got)
	}
}
