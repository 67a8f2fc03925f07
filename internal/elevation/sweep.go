package elevation

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Expiry takes effect at its time: every check compares with the clock, so
// a lapsed request cannot be approved, an expired grant cannot be used and
// a task past its deadline has no grants, whether or not the sweep has
// run. The sweep records those expiries (and moves the rows), so that the
// audit log tells when each ended and the lists stay short.

// Run sweeps every SweepInterval until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(s.sweep):
		}
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("elevation sweep failed; retrying", "err", err)
		}
	}
}

// system is the control plane acting on its own (timers).
var system = peer.Principal{Kind: audit.ActorSystem}

// Sweep times out tasks past their deadline (returning them to baseline)
// and expires lapsed requests and grants, recording each.
func (s *Service) Sweep(ctx context.Context) error {
	now := s.clock.Now()
	tasks, err := s.store.TasksDue(ctx, now)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		ended, err := s.store.EndTask(ctx, t.ID, TaskExpired, now, BulkheadApprover, "the task reached its deadline")
		if errors.Is(err, fault.Conflict) {
			continue // another replica ended it
		}
		if err != nil {
			return err
		}
		// The task is already closed (ending privilege never waits for
		// the log); the record follows.
		s.after(ctx, audit.Event{Time: now, Actor: audit.Actor{Kind: audit.ActorSystem, ID: BulkheadApprover}, Action: ActionTaskExpire,
			Target: t.Agent, Task: t.ID, Reasons: []string{"the task reached its deadline " + t.Deadline.UTC().Format(time.RFC3339)},
			Detail: map[string]string{"manifest": t.Manifest, "return_to_baseline": "true"}})
		s.recordEnded(ctx, system, t, ended, "task expired: return to baseline", now)
	}
	due, err := s.store.ElevationsDue(ctx, now)
	if err != nil {
		return err
	}
	for _, e := range due {
		why := "the grant expired"
		if e.Status == StatusPending {
			why = "the request lapsed unanswered"
		}
		s.expire(ctx, e, now, why)
	}
	return nil
}

// expire moves e to expired and records it, if no one changed it first.
func (s *Service) expire(ctx context.Context, e Elevation, now time.Time, why string) {
	err := s.store.SetStatus(ctx, e.ID, []Status{e.Status}, StatusExpired, now, BulkheadApprover, why)
	if errors.Is(err, fault.Conflict) {
		return
	}
	if err != nil {
		s.logger.Warn("could not record an expiry", "elevation", e.ID, "err", err)
		return
	}
	s.after(ctx, audit.Event{Time: now, Actor: audit.Actor{Kind: audit.ActorSystem, ID: BulkheadApprover}, Action: ActionExpire,
		Target: e.Agent, Task: e.Task, Reasons: []string{why},
		Detail: map[string]string{"elevation": e.ID, "trigger": e.Trigger, "previous_status": string(e.Status), "uses": strconv.FormatInt(e.Uses, 10)}})
}
