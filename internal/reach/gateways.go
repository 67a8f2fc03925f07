package reach

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// actionGatewayStart is the record a gateway makes when it starts, with
// what it serves (gateway.ActionStart).
const actionGatewayStart = "gateway.start"

// GatewayReports reads what each gateway reported when it last started
// (its gateway.start records), by gateway name. Only a gateway's own
// record counts: one made by the workload
// spiffe://TD/bulkhead/gateway/NAME for gateway NAME, so no agent or
// other gateway can describe a gateway.
func GatewayReports(ctx context.Context, r audit.Reader) (map[string]api.GatewayReport, error) {
	rows, err := r.Events(ctx, audit.Query{AfterSeq: -1, Actions: []string{actionGatewayStart}, Decision: audit.Allow})
	if err != nil {
		return nil, fmt.Errorf("reach: audit log: %w", err)
	}
	out := map[string]api.GatewayReport{}
	for _, row := range rows {
		e, err := audit.EventFromRow(row)
		if err != nil {
			return nil, fmt.Errorf("reach: audit log: %w", err)
		}
		var rep api.GatewayReport
		if json.Unmarshal([]byte(e.Detail["config"]), &rep) == nil && rep.Name != "" && madeBy(e.Actor, rep.Name) {
			out[rep.Name] = rep // later records replace earlier ones
		}
	}
	return out, nil
}

// madeBy reports whether actor is gateway name's own identity.
func madeBy(actor audit.Actor, name string) bool {
	id, err := spiffeid.FromString(actor.ID)
	return err == nil && actor.Kind == audit.ActorWorkload && id.Path() == "/bulkhead/gateway/"+name
}

// Indirect adds to rep what the servers its items reach hold for it: the
// secrets their gateways inject upstream (which the agent never sees but
// uses with every call) and the destinations their sandboxes may reach
// through the egress proxy.
func Indirect(rep *Report, gateways map[string]api.GatewayReport) {
	servers := map[string]bool{}
	for _, it := range rep.Items {
		servers[it.Server] = true
	}
	names := make([]string, 0, len(gateways))
	for n := range gateways {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, s := range gateways[n].Servers {
			if !servers[s.Name] {
				continue
			}
			for _, c := range s.Credentials {
				rep.Secrets = append(rep.Secrets, fmt.Sprintf("%s (injected by gateway %s into server %s)", c, n, s.Name))
			}
			for _, h := range s.Egress {
				rep.Egress = append(rep.Egress, fmt.Sprintf("%s (from server %s's sandbox, gateway %s)", h, s.Name, n))
			}
		}
	}
}
