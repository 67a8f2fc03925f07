package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// maxIngest bounds one batch of records from a gateway.
const (
	maxIngestEvents = 1024
	maxIngestBody   = 8 << 20
)

// ingestRoutes lets remote gateways write their decision records into the
// control plane's log (POST /v1/audit/ingest). Only gateways may, and only
// gateway.* records about agents or themselves, and their own witness
// alerts (audit.witness); each record is stamped with
// the gateway that wrote it. The answer comes after the records are durable,
// so a gateway forwards a call only once its record is committed.
func (s *Server) ingestRoutes(mux *http.ServeMux) {
	guard := s.identity.Guard(s.logger)
	mux.Handle("POST /v1/audit/ingest", guard.Require(gatewaysOnly, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := peer.FromContext(r.Context())
		var req api.AuditIngest
		if err := httpx.DecodeJSON(w, r, maxIngestBody, &req); err != nil {
			httpx.WriteError(w, r, s.logger, err)
			return
		}
		if len(req.Events) == 0 || len(req.Events) > maxIngestEvents {
			httpx.WriteError(w, r, s.logger, fmt.Errorf("%w: send 1 to %d events", fault.Invalid, maxIngestEvents))
			return
		}
		evs := make([]audit.Event, len(req.Events))
		for i, raw := range req.Events {
			ev, err := audit.Decode(raw)
			if err == nil {
				err = checkIngested(&ev, p)
			}
			if err != nil {
				httpx.WriteError(w, r, s.logger, fmt.Errorf("%w: event %d: %w", fault.Invalid, i, err))
				return
			}
			evs[i] = ev
		}
		resp := api.AuditIngestResult{Seqs: make([]int64, len(evs))}
		for i, ev := range evs {
			rec, err := s.audit.Record(r.Context(), ev)
			if err != nil {
				httpx.WriteError(w, r, s.logger, fmt.Errorf("%w: %w", fault.Unavailable, err))
				return
			}
			resp.Seqs[i] = rec.Seq
		}
		httpx.WriteJSON(w, http.StatusOK, resp)
	})))
}

// gatewaysOnly admits Bulkhead gateways.
func gatewaysOnly(p peer.Principal) error {
	if p.Kind != audit.ActorWorkload || !strings.HasPrefix(p.ID.Path(), GatewayPath) {
		return fmt.Errorf("%w: only gateways write records here", fault.Forbidden)
	}
	return nil
}

func checkIngested(ev *audit.Event, gw peer.Principal) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	witness := ev.Action == audit.ActionAuditWitness // a gateway's witness alert about the log
	if !strings.HasPrefix(ev.Action, "gateway.") && !witness {
		return fmt.Errorf("action %q is not a gateway record", ev.Action)
	}
	switch {
	case witness && (ev.Actor.Kind != audit.ActorWorkload || ev.Actor.ID != gw.ID.String()):
		return fmt.Errorf("a gateway records its own witness alerts, not %s's", ev.Actor)
	case ev.Actor.Kind == audit.ActorAgent && strings.HasPrefix(ev.Actor.ID, "spiffe://"+gw.ID.TrustDomain().Name()+"/agent/"):
	case ev.Actor.Kind == audit.ActorWorkload && ev.Actor.ID == gw.ID.String():
	default:
		return fmt.Errorf("a gateway records actions of agents or of itself, not %s", ev.Actor)
	}
	if ev.Detail == nil {
		ev.Detail = map[string]string{}
	}
	ev.Detail["recorded_by"] = gw.ID.String()
	return nil
}
