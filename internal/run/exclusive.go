package run

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// Lease is this replica's leadership of one job.
type Lease interface {
	// Lost is closed when the leadership ends without Release: the
	// replica's lock session died, so another replica may lead now.
	Lost() <-chan struct{}
	// Release gives the leadership up. It is idempotent.
	Release()
}

// TryLead takes the leadership of the job name if no replica holds it. It
// returns a nil Lease, and no error, when another replica leads.
type TryLead func(ctx context.Context, name string) (Lease, error)

// ErrLeadLost is the cause (context.Cause) of a job's context when the job
// was stopped because its replica stopped leading, rather than because the
// process is stopping. A job checks it before work it does only on a clean
// stop (a last checkpoint): another replica leads by then.
var ErrLeadLost = errors.New("run: this replica stopped leading the job")

// LeadLost reports whether ctx ended because its job lost the lead.
func LeadLost(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrLeadLost) }

// DefaultRetry is how often a replica that does not lead a job tries to
// take it over.
const DefaultRetry = 5 * time.Second

// Exclusive is a job that must run on one replica at a time. Every replica
// runs its Exclusive; the one that takes the lead runs Job, the others
// retry every Retry, so when the leader dies another takes over within
// about Retry.
type Exclusive struct {
	// Name names the job and its lock. Required.
	Name string
	// Lead takes the lock. Required.
	Lead TryLead
	// Job runs while this replica leads; its context ends when the lead
	// is lost (cause ErrLeadLost) or the process stops. Required.
	Job func(ctx context.Context) error
	// Clock times the retries. Required.
	Clock clock.Clock
	// Logger. Required.
	Logger *slog.Logger
	// Retry is the wait between attempts to take the lead (default
	// DefaultRetry).
	Retry time.Duration
}

// Component is e under the group runner.
func (e Exclusive) Component() Component { return Func(e.Name, e.Run) }

func (e Exclusive) retry() time.Duration {
	if e.Retry <= 0 {
		return DefaultRetry
	}
	return e.Retry
}

// Run takes the lead whenever it is free and runs the job while it holds
// it, until ctx ends. The first attempt is immediate, so a lone replica
// (and SQLite, where the lead is always free) starts its jobs at once. A
// job that fails or ends while leading ends Run, as it would without a
// lease; a job stopped by a lost lead is retried.
func (e Exclusive) Run(ctx context.Context) error {
	log := e.Logger.With("job", e.Name)
	for {
		lease, err := e.Lead(ctx, e.Name)
		switch {
		case ctx.Err() != nil:
			if lease != nil {
				lease.Release()
			}
			return nil
		case err != nil:
			log.Warn("could not try for the job's lead; retrying", "retry_in", e.retry(), "err", err)
		case lease != nil:
			if lost, err := e.lead(ctx, lease, log); !lost {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.Clock.After(e.retry()):
		}
	}
}

// lead runs the job under lease until either ends, then releases it. lost
// reports that the job stopped because the lead was lost while ctx goes on.
func (e Exclusive) lead(ctx context.Context, lease Lease, log *slog.Logger) (lost bool, err error) {
	log.Info("leading the job on this replica")
	jctx, cancel := context.WithCancelCause(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-lease.Lost():
			cancel(ErrLeadLost)
		case <-jctx.Done():
		}
	}()
	err = e.Job(jctx)
	lost = LeadLost(jctx) && ctx.Err() == nil
	cancel(nil)
	<-watched
	// Released only once the job has returned: a job that finishes its
	// work after ctx ends (a last checkpoint) still holds the lock.
	lease.Release()
	if lost {
		log.Warn("lost the job's lead (its lock session ended); another replica takes over", "retry_in", e.retry())
		return true, nil
	}
	return false, err
}
