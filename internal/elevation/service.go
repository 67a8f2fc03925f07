package elevation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Audit actions recorded by this package. Every record names the agent
// whose privilege it concerns as its target and the task in Task, so one
// search finds a task's whole story.
const (
	ActionManifestApply       = "manifest.apply"
	ActionTaskStart           = "task.start"
	ActionTaskComplete        = "task.complete"
	ActionTaskCancel          = "task.cancel"
	ActionTaskExpire          = "task.expire"
	ActionTaskTaint           = "task.taint"
	ActionRequest             = "elevation.request"
	ActionAutoApprove         = "elevation.auto_approve"
	ActionApprove             = "elevation.approve"
	ActionDeny                = "elevation.deny"
	ActionGrant               = "elevation.grant"
	ActionUse                 = "elevation.use"
	ActionExhaust             = "elevation.exhaust"
	ActionExpire              = "elevation.expire"
	ActionRevoke              = "elevation.revoke"
	ActionEnd                 = "elevation.end"
	ActionApprovalPolicyApply = "approval_policy.apply"
)

// Recorder commits audit events; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Policies is what elevation needs of the policy service: a check that a
// manifest's policies compile against the live schema before they are
// stored, and a reload so that this replica decides with them at once.
type Policies interface {
	CheckManaged(ctx context.Context, m policy.ManagedSet) error
	Reload(ctx context.Context) error
}

// Catalog is the tool catalog, read to learn which tools' output taints.
type Catalog interface {
	Catalog(ctx context.Context) (policy.Catalog, error)
}

// Defaults of Config.
const (
	DefaultPendingTTL    = 15 * time.Minute
	DefaultSweepInterval = time.Second
)

// Config holds a Service's dependencies; all but the durations are
// required.
type Config struct {
	Store    Store
	Audit    Recorder
	Policies Policies
	Catalog  Catalog
	Clock    clock.Clock
	Logger   *slog.Logger
	// PendingTTL is how long a request waits for approval before it
	// lapses; zero means DefaultPendingTTL.
	PendingTTL time.Duration
	// SweepInterval is how often Run records expiries; zero means
	// DefaultSweepInterval. Expiry takes effect at its time whatever the
	// sweep: every check compares with the clock.
	SweepInterval time.Duration
}

// Service runs manifests, tasks, elevation requests, approvals and grants.
// Every change is recorded in the audit log before it is made, and any
// store, policy or audit failure refuses it.
type Service struct {
	store      Store
	audit      Recorder
	policies   Policies
	catalog    Catalog
	clock      clock.Clock
	logger     *slog.Logger
	pendingTTL time.Duration
	sweep      time.Duration

	approvalMu sync.Mutex
	approval   *approvalSet
}

// New returns a Service; a missing dependency is an error, never a
// degraded mode.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Policies == nil || cfg.Catalog == nil || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("elevation: store, audit log, policies, catalog, clock and logger are required")
	}
	s := &Service{store: cfg.Store, audit: cfg.Audit, policies: cfg.Policies, catalog: cfg.Catalog, clock: cfg.Clock,
		logger: cfg.Logger, pendingTTL: cfg.PendingTTL, sweep: cfg.SweepInterval}
	if s.pendingTTL <= 0 {
		s.pendingTTL = DefaultPendingTTL
	}
	if s.sweep <= 0 {
		s.sweep = DefaultSweepInterval
	}
	if _, err := validator(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) act(ctx context.Context, ev audit.Event, do func() error) error {
	if ev.Time.IsZero() {
		ev.Time = s.clock.Now()
	}
	return audit.Act(ctx, s.audit, s.logger, ev, do)
}

// deny records a refusal and returns why. The refusal stands even if it
// cannot be recorded.
func (s *Service) deny(ctx context.Context, ev audit.Event, why error) error {
	audit.Refuse(ctx, s.audit, s.logger, ev, why)
	return why
}

// after records a fact that follows an action already taken (an ending,
// an expiry); a failure is logged, since the action has happened and only
// ever removed privilege.
func (s *Service) after(ctx context.Context, ev audit.Event) {
	if ev.Decision == "" {
		ev.Decision = audit.Allow
	}
	if _, err := s.audit.Record(ctx, ev); err != nil {
		s.logger.Error("action done but its record failed", "action", ev.Action, "task", ev.Task, "err", err)
	}
}

// unavailable marks a store failure as a refusal for want of a
// dependency, keeping the domain's own kinds.
func unavailable(err error) error {
	for _, k := range []error{fault.NotFound, fault.Conflict, fault.Invalid, fault.Forbidden, fault.Unavailable} {
		if errors.Is(err, k) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", fault.Unavailable, err)
}

// ApplyManifest parses, compiles and stores a manifest as its next
// version, by an operator. Its policies take effect at every PDP (this
// replica's at once) for every task of the manifest, open ones included.
func (s *Service) ApplyManifest(ctx context.Context, by peer.Principal, source []byte) (StoredManifest, error) {
	if by.Kind != audit.ActorOperator {
		return StoredManifest{}, fmt.Errorf("%w: only operators apply manifests", fault.Forbidden)
	}
	m, err := ParseManifest(source)
	if err != nil {
		return StoredManifest{}, err
	}
	prev, err := s.store.GetManifest(ctx, m.Name)
	next := int64(1)
	switch {
	case err == nil:
		next = prev.Version + 1
	case !errors.Is(err, fault.NotFound):
		return StoredManifest{}, unavailable(err)
	}
	set, err := Compile(m, next)
	if err != nil {
		return StoredManifest{}, err
	}
	if err := s.policies.CheckManaged(ctx, set); err != nil {
		return StoredManifest{}, fmt.Errorf("manifest %s: %w", m.Name, err)
	}
	now := s.clock.Now()
	sm := StoredManifest{Manifest: m, Version: next, Source: string(source), Policies: set.Files[0].Content,
		Digest: set.Digest, CreatedAt: now, CreatedBy: by.ID.String()}
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionManifestApply, Target: "manifest/" + m.Name,
		Digests: map[string]string{"manifest": audit.Digest(source), "policies": set.Digest},
		Detail: map[string]string{"manifest": m.Name, "version": fmt.Sprint(next),
			"triggers": fmt.Sprint(len(m.EscalationTriggers)), "prohibited": fmt.Sprint(len(m.ProhibitedActions))}}
	if err := s.act(ctx, ev, func() error { return s.store.PutManifest(ctx, sm) }); err != nil {
		return StoredManifest{}, unavailable(err)
	}
	if err := s.policies.Reload(ctx); err != nil {
		s.logger.Warn("manifest stored; its policies load at the next poll", "manifest", m.Name, "err", err)
	}
	return sm, nil
}

// Manifest returns a manifest's latest version.
func (s *Service) Manifest(ctx context.Context, name string) (StoredManifest, error) {
	if err := ValidateName("manifest", name); err != nil {
		return StoredManifest{}, err
	}
	m, err := s.store.GetManifest(ctx, name)
	return m, unavailableUnlessKind(err)
}

// Manifests lists manifests.
func (s *Service) Manifests(ctx context.Context) ([]StoredManifest, error) {
	ms, err := s.store.ListManifests(ctx)
	return ms, unavailableUnlessKind(err)
}

func unavailableUnlessKind(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

// inTask reports whether agent (a SPIFFE ID) works in t: it opened it, or
// is a sub-agent of the one that did.
func inTask(t Task, agent string) bool {
	return agent == t.Agent || strings.HasPrefix(agent, t.Agent+"/sub/")
}

// StartTask opens a task of manifest for the calling agent.
func (s *Service) StartTask(ctx context.Context, by peer.Principal, manifest, description string) (Task, error) {
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionTaskStart, Target: by.ID.String(),
		Detail: map[string]string{"manifest": manifest}}
	if by.Kind != audit.ActorAgent {
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: tasks are opened by agents", fault.Forbidden))
	}
	if err := ValidateName("manifest", manifest); err != nil {
		return Task{}, s.deny(ctx, ev, err)
	}
	if len(description) > maxText {
		return Task{}, fmt.Errorf("%w: description is over %d bytes", fault.Invalid, maxText)
	}
	m, err := s.store.GetManifest(ctx, manifest)
	if errors.Is(err, fault.NotFound) {
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: there is no manifest %q", fault.NotFound, manifest))
	}
	if err != nil {
		return Task{}, unavailable(err)
	}
	if !m.AllowsAgent(by.ID.String()) {
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: manifest %s is not for %s", fault.Forbidden, manifest, by.ID))
	}
	id, err := newID("tk")
	if err != nil {
		return Task{}, err
	}
	t := Task{ID: id, Agent: by.ID.String(), Manifest: m.Name, ManifestVersion: m.Version, Description: description,
		Status: TaskOpen, OpenedAt: now, Deadline: now.Add(time.Duration(m.MaxDuration))}
	ev.Task = id
	ev.Detail["manifest_version"] = fmt.Sprint(m.Version)
	ev.Detail["deadline"] = t.Deadline.UTC().Format(time.RFC3339)
	if err := s.act(ctx, ev, func() error { return s.store.CreateTask(ctx, t) }); err != nil {
		return Task{}, unavailable(err)
	}
	return t, nil
}

// Task returns a task to an operator, a workload, or an agent working in
// it.
func (s *Service) Task(ctx context.Context, by peer.Principal, id string) (Task, error) {
	if err := ValidateTaskID(id); err != nil {
		return Task{}, err
	}
	t, err := s.store.GetTask(ctx, id)
	if err != nil {
		return Task{}, unavailable(err)
	}
	if by.Kind == audit.ActorAgent && !inTask(t, by.ID.String()) {
		// Another agent's task does not exist, as far as this one knows.
		return Task{}, fmt.Errorf("%w: task %s", fault.NotFound, id)
	}
	return t, nil
}

// Tasks lists tasks, newest first.
func (s *Service) Tasks(ctx context.Context, openOnly bool) ([]Task, error) {
	ts, err := s.store.ListTasks(ctx, openOnly)
	return ts, unavailableUnlessKind(err)
}

// CompleteTask ends a task as done, by the agent that opened it (or an
// ancestor of that agent): the agent returns to baseline, and every grant
// of the task stops at once.
func (s *Service) CompleteTask(ctx context.Context, by peer.Principal, id, reason string) (Task, error) {
	return s.endTask(ctx, by, id, TaskCompleted, reason)
}

// CancelTask ends a task as abandoned, by an operator or the agent that
// opened it.
func (s *Service) CancelTask(ctx context.Context, by peer.Principal, id, reason string) (Task, error) {
	return s.endTask(ctx, by, id, TaskCancelled, reason)
}

var endActions = map[TaskStatus]string{TaskCompleted: ActionTaskComplete, TaskCancelled: ActionTaskCancel, TaskExpired: ActionTaskExpire}

func (s *Service) endTask(ctx context.Context, by peer.Principal, id string, to TaskStatus, reason string) (Task, error) {
	if err := ValidateTaskID(id); err != nil {
		return Task{}, err
	}
	if len(reason) > maxText {
		return Task{}, fmt.Errorf("%w: reason is over %d bytes", fault.Invalid, maxText)
	}
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: endActions[to], Target: by.ID.String(), Task: id,
		Detail: map[string]string{"return_to_baseline": "true"}}
	if reason != "" {
		ev.Reasons = []string{reason}
	}
	t, err := s.store.GetTask(ctx, id)
	if errors.Is(err, fault.NotFound) {
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: task %s", fault.NotFound, id))
	}
	if err != nil {
		return Task{}, unavailable(err)
	}
	ev.Target = t.Agent
	switch {
	case by.Kind == audit.ActorAgent && !isAncestorOrSelf(by.ID.String(), t.Agent):
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: task %s is not %s's", fault.NotFound, id, by.ID))
	case by.Kind == audit.ActorAgent, by.Kind == audit.ActorOperator && to == TaskCancelled, by.Kind == audit.ActorSystem && to == TaskExpired:
	default:
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: %s may not end task %s this way", fault.Forbidden, by.ID, id))
	}
	if t.Status != TaskOpen {
		return Task{}, s.deny(ctx, ev, fmt.Errorf("%w: task %s is %s already", fault.Conflict, id, t.Status))
	}
	ev.Detail["manifest"] = t.Manifest
	var ended []Elevation
	err = s.act(ctx, ev, func() error {
		var err error
		ended, err = s.store.EndTask(ctx, id, to, now, by.ID.String(), reason)
		return err
	})
	if err != nil {
		return Task{}, unavailable(err)
	}
	s.recordEnded(ctx, by, t, ended, fmt.Sprintf("task %s: return to baseline", to), now)
	t.Status, t.EndedAt, t.EndedBy, t.EndReason = to, now, by.ID.String(), reason
	return t, nil
}

// recordEnded records each elevation a task's end ended.
func (s *Service) recordEnded(ctx context.Context, by peer.Principal, t Task, ended []Elevation, why string, now time.Time) {
	for _, e := range ended {
		s.after(ctx, audit.Event{Time: now, Actor: by.Actor(), Action: ActionEnd, Target: e.Agent, Task: t.ID,
			Reasons: []string{why}, Detail: map[string]string{"elevation": e.ID, "trigger": e.Trigger, "previous_status": string(e.Status),
				"uses": fmt.Sprint(e.Uses)}})
	}
}

// isAncestorOrSelf reports whether a is agent b or one of its ancestors.
func isAncestorOrSelf(a, b string) bool { return a == b || strings.HasPrefix(b, a+"/sub/") }

// TaintByOutput records that a task received output from resource, as a
// gateway reports it (by is the gateway): if the tool catalog says the
// resource's output is untrusted (or cannot say), or the gateway reports
// it suspect (why its process is: e.g. its sandbox refused a system
// call), the task is marked tainted. It returns whether the resource is
// untrusted and whether the task is tainted now.
func (s *Service) TaintByOutput(ctx context.Context, by peer.Principal, id, agent string, resource cedar.EntityUID, suspect string) (untrusted, tainted bool, err error) {
	if err := ValidateTaskID(id); err != nil {
		return false, false, err
	}
	t, err := s.store.GetTask(ctx, id)
	if err != nil {
		return false, false, unavailable(err)
	}
	if !inTask(t, agent) {
		return false, false, fmt.Errorf("%w: %s does not work in task %s", fault.Forbidden, agent, id)
	}
	untrusted = true
	why := "received output from " + resource.String() + ", whose output is untrusted"
	if suspect != "" {
		why = "received output from " + resource.String() + ", whose process is suspect: " + suspect
	} else if cat, err := s.catalog.Catalog(ctx); err != nil {
		// Unknown trust is no trust.
		s.logger.Warn("tool catalog unreadable; treating output as untrusted", "err", err)
	} else {
		untrusted = catalogUntrusted(cat, resource)
	}
	if !untrusted || t.Tainted || !t.OpenAt(s.clock.Now()) {
		return untrusted, t.Tainted, nil
	}
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionTaskTaint, Target: t.Agent, Task: id,
		Reasons: []string{why},
		Detail:  map[string]string{"resource": resource.String(), "agent": agent, "manifest": t.Manifest}}
	err = s.act(ctx, ev, func() error {
		_, err := s.store.TaintTask(ctx, id, now, resource.String())
		return err
	})
	if err != nil {
		return true, false, unavailable(err)
	}
	return true, true, nil
}

// catalogUntrusted reports whether the catalog marks resource's output
// untrusted; anything it does not list is untrusted.
func catalogUntrusted(c policy.Catalog, res cedar.EntityUID) bool {
	id := string(res.ID)
	for _, srv := range c.Servers {
		if res.Type == policy.TypeToolServer && id == srv.Name {
			return srv.UntrustedOutput == nil || *srv.UntrustedOutput
		}
		entries := srv.Tools
		if res.Type == policy.TypeRoute {
			entries = srv.Routes
		}
		for _, e := range entries {
			if id == srv.Name+"/"+e.Name {
				return e.UntrustedOutput == nil || *e.UntrustedOutput
			}
		}
	}
	return true
}

// TaskFor returns the deadline of task if it is open and agent works in
// it: the token service's check before it puts a task in a token.
func (s *Service) TaskFor(ctx context.Context, agent, task string) (time.Time, error) {
	if err := ValidateTaskID(task); err != nil {
		return time.Time{}, err
	}
	t, err := s.store.GetTask(ctx, task)
	if err != nil {
		return time.Time{}, unavailable(err)
	}
	if !inTask(t, agent) {
		return time.Time{}, fmt.Errorf("%w: %s does not work in task %s", fault.Forbidden, agent, task)
	}
	if now := s.clock.Now(); !t.OpenAt(now) {
		return time.Time{}, t.Ended()
	}
	return t.Deadline, nil
}
