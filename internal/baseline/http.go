package baseline

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Agents finds a registered agent (*identity.Service).
type Agents interface {
	GetAgent(ctx context.Context, name string) (identity.Agent, error)
}

// decisionActions are the gateway records a baseline learns from.
var decisionActions = []string{"gateway.call_tool", "gateway.GET", "gateway.POST", "gateway.PUT", "gateway.PATCH", "gateway.DELETE"}

// Of learns the baseline of a registered agent from the audit log.
func Of(ctx context.Context, agents Agents, events audit.Reader, name string, cfg Config) (Baseline, error) {
	a, err := agents.GetAgent(ctx, name)
	if err != nil {
		return Baseline{}, err
	}
	rows, err := events.Events(ctx, audit.Query{AfterSeq: -1, Subject: a.SPIFFEID, Actions: decisionActions})
	if err != nil {
		return Baseline{}, fmt.Errorf("baseline: audit log: %w", err)
	}
	calls := make([]Call, 0, len(rows))
	for _, r := range rows {
		e, err := audit.EventFromRow(r)
		if err != nil {
			return Baseline{}, fmt.Errorf("baseline: audit log: %w", err)
		}
		if c, ok := FromEvent(e); ok {
			calls = append(calls, c)
		}
	}
	return Learn(a.SPIFFEID, calls, cfg), nil
}

// Routes registers GET /v1/agents/{name}/baseline, for operators only.
func Routes(mux *http.ServeMux, guard peer.Guard, agents Agents, events audit.Reader, logger *slog.Logger) {
	mux.Handle("GET /v1/agents/{name}/baseline", guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := Of(r.Context(), agents, events, r.PathValue("name"), DefaultConfig)
		if err != nil {
			httpx.WriteError(w, r, logger, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, b)
	})))
}
