package assess

import (
	"log/slog"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Routes registers GET /v1/assess and GET /v1/status, for operators
// only.
func Routes(mux *http.ServeMux, guard peer.Guard, d Deps, cps Checkpoints, clk clock.Clock, logger *slog.Logger) {
	mux.Handle("GET /v1/status", guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := Status(r.Context(), d, cps, clk.Now())
		if err != nil {
			httpx.WriteError(w, r, logger, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, st)
	})))
	mux.Handle("GET /v1/assess", guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := Assess(r.Context(), d, clk.Now())
		if err != nil {
			httpx.WriteError(w, r, logger, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, a)
	})))
}
