package reach

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Freezer holds the PDP still (*policy.Service).
type Freezer interface {
	Freeze(candidate *policy.Set, managed ...policy.ManagedSet) (*policy.Frozen, error)
}

// ManifestSource lists the task manifests (*elevation.Service).
type ManifestSource interface {
	Manifests(ctx context.Context) ([]elevation.StoredManifest, error)
}

// maxBody bounds a request: a candidate set at its limit, JSON escaped.
const maxBody = 2*policy.MaxSetBytes + 1<<20

// Routes registers POST /v1/blast-radius, for operators only: what an
// agent can reach is the map an attacker would want.
func Routes(mux *http.ServeMux, guard peer.Guard, pdp Freezer, manifests ManifestSource, events audit.Reader, clk clock.Clock, logger *slog.Logger) {
	mux.Handle("POST /v1/blast-radius", guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.BlastRadiusRequest
		if err := httpx.DecodeJSON(w, r, maxBody, &req); err != nil {
			httpx.WriteError(w, r, logger, err)
			return
		}
		out, err := Answer(r.Context(), pdp, manifests, events, req, clk)
		if err != nil {
			httpx.WriteError(w, r, logger, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, out)
	})))
}

// Answer computes what req asks, from the live state: the PDP, the
// manifests, and what gateways reported they serve.
func Answer(ctx context.Context, pdp Freezer, manifests ManifestSource, events audit.Reader, req api.BlastRadiusRequest, clk clock.Clock) (api.BlastRadius, error) {
	live, err := pdp.Freeze(nil)
	if err != nil {
		return api.BlastRadius{}, err
	}
	stored, err := manifests.Manifests(ctx)
	if err != nil {
		return api.BlastRadius{}, err
	}
	opts := Options{At: clk.Now()}
	if req.At != nil {
		opts.At = *req.At
	}
	for _, m := range stored {
		opts.Manifests = append(opts.Manifests, m.Manifest)
	}
	out := api.BlastRadius{Version: live.Version(), At: opts.At}
	fleet := func(f *policy.Frozen, opts Options) (Fleet, error) {
		if req.Agent == "" {
			return All(f, opts)
		}
		uid, err := findAgent(f, req.Agent)
		if err != nil {
			return Fleet{}, err
		}
		rep, err := Agent(f, uid, opts)
		return Fleet{Agents: []Report{rep}, Score: rep.Score, Analyses: 1}, err
	}
	if out.Fleet, err = fleet(live, opts); err != nil {
		return api.BlastRadius{}, err
	}
	gateways, err := GatewayReports(ctx, events)
	if err != nil {
		return api.BlastRadius{}, err
	}
	for i := range out.Fleet.Agents {
		Indirect(&out.Fleet.Agents[i], gateways)
	}
	if len(req.Candidate) == 0 && len(req.CandidateManifests) == 0 {
		return out, nil
	}
	var set *policy.Set
	if len(req.Candidate) > 0 {
		files := make([]policy.File, len(req.Candidate))
		for i, f := range req.Candidate {
			files[i] = policy.File{Name: f.Name, Content: f.Content}
		}
		if set, err = policy.Compile(files); err != nil {
			return api.BlastRadius{}, err
		}
	}
	// Candidate manifests replace the stored ones of their names.
	candOpts := opts
	candOpts.Manifests = slices.Clone(opts.Manifests)
	var managed []policy.ManagedSet
	for _, y := range req.CandidateManifests {
		m, err := elevation.ParseManifest([]byte(y))
		if err != nil {
			return api.BlastRadius{}, err
		}
		ms, err := elevation.Compile(m, 0)
		if err != nil {
			return api.BlastRadius{}, err
		}
		managed = append(managed, ms)
		candOpts.Manifests = slices.DeleteFunc(candOpts.Manifests, func(o elevation.Manifest) bool { return o.Name == m.Name })
		candOpts.Manifests = append(candOpts.Manifests, m)
	}
	cand, err := pdp.Freeze(set, managed...)
	if err != nil {
		return api.BlastRadius{}, err
	}
	after, err := fleet(cand, candOpts)
	if err != nil {
		return api.BlastRadius{}, err
	}
	d := Compare(out.Fleet, after)
	out.Diff = &d
	return out, nil
}

// findAgent resolves an agent's name or SPIFFE ID among the registered
// agents.
func findAgent(f *policy.Frozen, name string) (cedar.EntityUID, error) {
	for _, a := range f.Agents() {
		id := string(a.ID)
		if id == name || strings.HasSuffix(id, "/agent/"+name) {
			return a, nil
		}
	}
	return cedar.EntityUID{}, fmt.Errorf("%w: no active agent %q holds a role", fault.NotFound, name)
}
