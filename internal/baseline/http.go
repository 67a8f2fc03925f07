package baseline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Agents finds a registered agent (*identity.Service).
type Agents interface {
	GetAgent(ctx context.Context, name string) (identity.Agent, error)
}

// Of learns the baseline of a registered agent.
func Of(ctx context.Context, agents Agents, src Source, name string) (Baseline, error) {
	a, err := agents.GetAgent(ctx, name)
	if err != nil {
		return Baseline{}, err
	}
	return src.Baseline(ctx, a.SPIFFEID)
}

// Store keeps what was learned of each agent (*store.DB), so that the
// next read replays only the events after it — and baselines outlive the
// events, once the log is pruned.
type Store interface {
	Baseline(ctx context.Context, agent string) (state []byte, through int64, err error)
	PutBaseline(ctx context.Context, agent string, through int64, state []byte, at time.Time) error
}

// Roles lists the active agents with their roles (*store.DB).
type Roles interface {
	PolicyAgents(ctx context.Context) ([]policy.AgentRoles, error)
}

// StoredSource learns baselines from the audit log, from where the
// stored state left off, and stores what it learned (a Source). With
// Roles, an agent still learning its own baseline is judged by its
// roles' agents' instead.
type StoredSource struct {
	Store  Store
	Events audit.Reader
	Roles  Roles
	Config Config
	Clock  clock.Clock
	Logger *slog.Logger
}

// learnedActions are the records a baseline learns from.
var learnedActions = append(slices.Clone(decisionActions), actionUsage)

// maxPeers bounds the agents a role baseline is learned from.
const maxPeers = 32

// replayBatch is how many events a read replays at a time.
const replayBatch = 5000

// Baseline is the baseline of the agent with this SPIFFE ID: its own, or,
// while that is still learning, the one of the agents that share its
// (delegation root's) roles, merged — so a new agent calling a tool no
// agent of its role ever called is novel from its first call.
func (s StoredSource) Baseline(ctx context.Context, agent string) (Baseline, error) {
	l, err := s.learn(ctx, agent)
	if err != nil {
		return Baseline{}, err
	}
	own := l.baseline(s.Config)
	if !own.Learning || s.Roles == nil {
		return own, nil
	}
	agents, err := s.Roles.PolicyAgents(ctx)
	if err != nil {
		return Baseline{}, fmt.Errorf("baseline: roles: %w", err)
	}
	root := identity.Root(agent)
	var roles []string
	for _, a := range agents {
		if a.SPIFFEID == root {
			roles = a.Roles
		}
	}
	merged, peers, reads := newLearner(agent), 0, 0
	for _, a := range agents {
		if peers == maxPeers || reads == 2*maxPeers {
			break // bounded, even in a role of new agents
		}
		if a.SPIFFEID == root || !slices.ContainsFunc(a.Roles, func(r string) bool { return slices.Contains(roles, r) }) {
			continue
		}
		reads++
		pl, err := s.learn(ctx, a.SPIFFEID)
		if err != nil {
			return Baseline{}, err
		}
		if pl.baseline(s.Config).Learning {
			continue
		}
		merged.merge(pl)
		peers++
	}
	if peers == 0 {
		return own, nil
	}
	b := merged.baseline(s.Config)
	b.Basis = fmt.Sprintf("roles %s (%d agents)", strings.Join(roles, ", "), peers)
	return b, nil
}

// learn replays the decision records of the agent with this SPIFFE ID
// after its stored state, and stores the result. Failing to store it is
// logged, not returned: what was learned is right either way.
func (s StoredSource) learn(ctx context.Context, agent string) (*learner, error) {
	raw, through, err := s.Store.Baseline(ctx, agent)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	l := newLearner(agent)
	if raw != nil {
		if err := json.Unmarshal(raw, l); err != nil || l.B.Agent != agent || l.B.Tools == nil || l.B.DeniedTools == nil || l.B.Shapes == nil ||
			l.ResCalls == nil || l.ResBytes == nil || l.ResItems == nil || l.TaskBytes == nil {
			// Not a state this version can continue: learn anew.
			s.Logger.Warn("stored baseline unreadable; learning it again from the log", "agent", agent, "err", err)
			l, through = newLearner(agent), -1
		}
	}
	from := through
	for {
		rows, err := s.Events.Events(ctx, audit.Query{AfterSeq: through, Subject: agent, Actions: learnedActions, Limit: replayBatch})
		if err != nil {
			return nil, fmt.Errorf("baseline: audit log: %w", err)
		}
		for _, r := range rows {
			e, err := audit.EventFromRow(r)
			if err != nil {
				return nil, fmt.Errorf("baseline: audit log: %w", err)
			}
			if c, ok := FromEvent(e); ok && c.Agent == agent {
				l.add(c)
			} else if task, u, ok := FromUsage(e); ok && e.Actor.ID == agent {
				l.addUsage(task, u)
			}
			through = r.Seq
		}
		if len(rows) < replayBatch {
			break
		}
	}
	if through > from {
		state, err := json.Marshal(l)
		if err == nil {
			err = s.Store.PutBaseline(ctx, agent, through, state, s.Clock.Now())
		}
		if err != nil {
			s.Logger.Warn("could not store a baseline", "agent", agent, "err", err)
		}
	}
	return l, nil
}

// Routes registers GET /v1/agents/{name}/baseline, for operators, and
// GET /v1/baselines?agent=SPIFFE-ID for the callers readers admits
// (operators and the gateways, which score calls against baselines).
func Routes(mux *http.ServeMux, guard peer.Guard, readers peer.Rule, agents Agents, src Source, logger *slog.Logger) {
	answer := func(w http.ResponseWriter, r *http.Request, b Baseline, err error) {
		if err != nil {
			httpx.WriteError(w, r, logger, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, b)
	}
	mux.Handle("GET /v1/agents/{name}/baseline", guard.Require(peer.Kinds(audit.ActorOperator), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := Of(r.Context(), agents, src, r.PathValue("name"))
		answer(w, r, b, err)
	})))
	mux.Handle("GET /v1/baselines", guard.Require(readers, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := spiffeid.FromString(r.URL.Query().Get("agent"))
		if err != nil {
			answer(w, r, Baseline{}, fmt.Errorf("%w: agent must be a SPIFFE ID: %w", fault.Invalid, err))
			return
		}
		b, err := src.Baseline(r.Context(), id.String())
		answer(w, r, b, err)
	})))
}
