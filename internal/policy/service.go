package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Audit actions recorded by the policy service. The gateway records its own
// decisions; the control plane records those made through AuthZEN.
const (
	ActionPolicyApply      = "policy.apply"
	ActionPolicyRollback   = "policy.rollback"
	ActionPolicyPromote    = "policy.promote"
	ActionPolicyShadowStop = "policy.shadow_stop"
	ActionRoleAdd          = "role.add"
	ActionRoleRemove       = "role.remove"
	ActionToolApply        = "tool.apply"
	ActionDecision         = "pdp.decision"
)

// Recorder commits audit events; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Config holds a Service's dependencies; all but the durations are
// required.
type Config struct {
	Store       Store
	Audit       Recorder
	TrustDomain spiffeid.TrustDomain
	Clock       clock.Clock
	Logger      *slog.Logger
	// PollInterval and MaxStale are the PDP's (see PDPConfig).
	PollInterval time.Duration
	MaxStale     time.Duration
	// Managed and Observer are the PDP's (see PDPConfig); optional.
	Managed  ManagedSource
	Observer DecisionObserver
}

// Service manages policy versions, roles and the tool catalog, and answers
// decision requests with its PDP. Every change is recorded in the audit log
// before it is made.
type Service struct {
	*PDP
	store   Store
	audit   Recorder
	clock   clock.Clock
	logger  *slog.Logger
	managed ManagedSource
}

// New returns a Service with its PDP loaded.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil {
		return nil, errors.New("policy: store and audit log are required")
	}
	pdp, err := NewPDP(ctx, PDPConfig{Store: cfg.Store, TrustDomain: cfg.TrustDomain, Clock: cfg.Clock, Logger: cfg.Logger, Observer: cfg.Observer,
		PollInterval: cfg.PollInterval, MaxStale: cfg.MaxStale, Managed: cfg.Managed})
	if err != nil {
		return nil, err
	}
	return &Service{PDP: pdp, store: cfg.Store, audit: cfg.Audit, clock: cfg.Clock, logger: cfg.Logger, managed: cfg.Managed}, nil
}

// act records ev (decision allow) and only then runs do; if do fails a
// second record says so. If the first record cannot be written, do never
// runs. After a change the PDP reloads at once, so this replica decides
// with it before the call returns.
func (s *Service) act(ctx context.Context, ev audit.Event, do func() error) error {
	if ev.Time.IsZero() {
		ev.Time = s.clock.Now()
	}
	if err := audit.Act(ctx, s.audit, s.logger, ev, do); err != nil {
		return err
	}
	if err := s.Reload(ctx); err != nil {
		// The change is committed; the poll loop will load it.
		s.logger.Warn("change committed but not yet loaded", "action", ev.Action, "err", err)
	}
	return nil
}

// Apply validates files as a policy set and stores it as a new version:
// live, or, with shadow, the candidate evaluated beside the live set. An
// invalid set changes nothing and returns Errors.
func (s *Service) Apply(ctx context.Context, by audit.Actor, files []File, shadow bool, description string) (Version, error) {
	if len(description) > 1024 {
		return Version{}, fmt.Errorf("%w: description is over 1024 bytes", fault.Invalid)
	}
	set, err := Compile(files)
	if err != nil {
		return Version{}, err
	}
	if err := s.checkReplacement(ctx, set); err != nil {
		return Version{}, err
	}
	v := Version{Files: set.Files(), Digest: set.Digest(), Policies: set.Len(), Shadow: shadow,
		Description: description, CreatedAt: s.clock.Now(), CreatedBy: by.ID}
	ev := audit.Event{Time: v.CreatedAt, Actor: by, Action: ActionPolicyApply, Target: "policy",
		Digests: map[string]string{"policy_set": v.Digest},
		Detail:  map[string]string{"policies": fmt.Sprint(v.Policies), "files": fmt.Sprint(len(v.Files)), "shadow": fmt.Sprint(shadow)}}
	err = s.act(ctx, ev, func() error {
		n, err := s.store.CreatePolicyVersion(ctx, v)
		v.Number = n
		return err
	})
	if err != nil {
		return Version{}, err
	}
	v.Files = nil
	return v, nil
}

// Rollback makes an earlier (or any stored) version live.
func (s *Service) Rollback(ctx context.Context, by audit.Actor, n int64) (State, error) {
	v, err := s.store.PolicyVersion(ctx, n)
	if err != nil {
		return State{}, err
	}
	set, err := Compile(v.Files)
	if err != nil {
		return State{}, fmt.Errorf("%w: version %d no longer compiles: %w", fault.Conflict, n, err)
	}
	if err := s.checkReplacement(ctx, set); err != nil {
		return State{}, err
	}
	return s.changeState(ctx, by, ActionPolicyRollback, map[string]string{"version": fmt.Sprint(n)}, func(st State) (State, error) {
		st.Live = n
		if st.Shadow == n {
			st.Shadow = 0
		}
		return st, nil
	})
}

// Promote makes the shadow version live and ends shadow evaluation.
func (s *Service) Promote(ctx context.Context, by audit.Actor) (State, error) {
	return s.changeState(ctx, by, ActionPolicyPromote, nil, func(st State) (State, error) {
		if st.Shadow == 0 {
			return st, fmt.Errorf("%w: there is no shadow version to promote", fault.Conflict)
		}
		st.Live, st.Shadow = st.Shadow, 0
		return st, nil
	})
}

// StopShadow ends shadow evaluation; the live version is unchanged.
func (s *Service) StopShadow(ctx context.Context, by audit.Actor) (State, error) {
	return s.changeState(ctx, by, ActionPolicyShadowStop, nil, func(st State) (State, error) {
		if st.Shadow == 0 {
			return st, fmt.Errorf("%w: no shadow version is being evaluated", fault.Conflict)
		}
		st.Shadow = 0
		return st, nil
	})
}

func (s *Service) changeState(ctx context.Context, by audit.Actor, action string, detail map[string]string, fn func(State) (State, error)) (State, error) {
	var out State
	ev := audit.Event{Actor: by, Action: action, Target: "policy", Detail: detail}
	err := s.act(ctx, ev, func() error {
		var err error
		out, err = s.store.UpdatePolicyState(ctx, fn)
		return err
	})
	return out, err
}

// Versions lists stored versions and the state.
func (s *Service) Versions(ctx context.Context) ([]Version, State, error) {
	st, err := s.store.PolicyState(ctx)
	if err != nil {
		return nil, State{}, err
	}
	vs, err := s.store.ListPolicyVersions(ctx)
	return vs, st, err
}

// Version returns a version with its files; n 0 is the live version, -1
// the shadow version.
func (s *Service) Version(ctx context.Context, n int64) (Version, State, error) {
	st, err := s.store.PolicyState(ctx)
	if err != nil {
		return Version{}, State{}, err
	}
	switch n {
	case 0:
		n = st.Live
	case -1:
		n = st.Shadow
	}
	if n == 0 {
		return Version{}, st, fmt.Errorf("%w: no such version is in force", fault.NotFound)
	}
	v, err := s.store.PolicyVersion(ctx, n)
	return v, st, err
}

// ShadowReport returns what shadow evaluation of a version found, newest
// differences first (at most limit; 0 for all). version 0 means the
// current shadow version. Differences observed here but not yet written
// are written first.
func (s *Service) ShadowReport(ctx context.Context, version int64, limit int) (ShadowSummary, []ShadowDiff, error) {
	if version == 0 {
		st, err := s.store.PolicyState(ctx)
		if err != nil {
			return ShadowSummary{}, nil, err
		}
		if st.Shadow == 0 {
			return ShadowSummary{}, nil, fmt.Errorf("%w: no shadow version is being evaluated; name one with --version", fault.NotFound)
		}
		version = st.Shadow
	}
	if err := s.shadowRec.flush(ctx); err != nil {
		return ShadowSummary{}, nil, fmt.Errorf("%w: write shadow differences: %w", fault.Unavailable, err)
	}
	sum, err := s.store.ShadowSummary(ctx, version)
	if err != nil {
		return ShadowSummary{}, nil, err
	}
	diffs, err := s.store.ShadowDiffs(ctx, version, limit)
	return sum, diffs, err
}

// FlushShadow writes pending shadow differences now.
func (s *Service) FlushShadow(ctx context.Context) error { return s.shadowRec.flush(ctx) }

// AddRole assigns role to agent.
func (s *Service) AddRole(ctx context.Context, by audit.Actor, agent, role string) (RoleAssignment, error) {
	if err := ValidateName("role", role); err != nil {
		return RoleAssignment{}, err
	}
	a := RoleAssignment{Agent: agent, Role: role, CreatedAt: s.clock.Now(), CreatedBy: by.ID}
	ev := audit.Event{Time: a.CreatedAt, Actor: by, Action: ActionRoleAdd, Target: s.agentTarget(agent), Detail: map[string]string{"role": role}}
	return a, s.act(ctx, ev, func() error { return s.store.AddAgentRole(ctx, a) })
}

// RemoveRole takes role from agent.
func (s *Service) RemoveRole(ctx context.Context, by audit.Actor, agent, role string) error {
	if err := ValidateName("role", role); err != nil {
		return err
	}
	ev := audit.Event{Actor: by, Action: ActionRoleRemove, Target: s.agentTarget(agent), Detail: map[string]string{"role": role}}
	return s.act(ctx, ev, func() error { return s.store.RemoveAgentRole(ctx, agent, role) })
}

// Roles lists role assignments; agent "" lists all.
func (s *Service) Roles(ctx context.Context, agent string) ([]RoleAssignment, error) {
	return s.store.ListAgentRoles(ctx, agent)
}

func (s *Service) agentTarget(agent string) string {
	id, err := spiffeid.FromSegments(s.td, "agent", agent)
	if err != nil {
		return agent
	}
	return id.String()
}

// ApplyCatalog replaces the tool catalog.
func (s *Service) ApplyCatalog(ctx context.Context, by audit.Actor, c Catalog) (Catalog, error) {
	if err := c.Normalize(); err != nil {
		return Catalog{}, err
	}
	tools := 0
	for _, srv := range c.Servers {
		tools += len(srv.Tools) + len(srv.Routes)
	}
	ev := audit.Event{Actor: by, Action: ActionToolApply, Target: "tools",
		Detail: map[string]string{"servers": fmt.Sprint(len(c.Servers)), "tools": fmt.Sprint(tools)}}
	return c, s.act(ctx, ev, func() error { return s.store.ReplaceToolCatalog(ctx, c) })
}

// Catalog returns the tool catalog.
func (s *Service) Catalog(ctx context.Context) (Catalog, error) { return s.store.ToolCatalog(ctx) }
