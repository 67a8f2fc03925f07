package elevation_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// A token or an elevation asked for a task that has ended is refused with
// how and when it ended and what to do, not a bare "conflict".
func TestEndedTaskSaysHowWhenAndWhatToDo(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		end  func(e *env, task elevation.Task) error
		want string
	}{
		{"completed", func(e *env, task elevation.Task) error {
			_, err := e.svc.CompleteTask(ctx, e.alpha, task.ID, "report written")
			return err
		}, `ended: completed at 2026-11-02T09:01:00Z ("report written")`},
		{"cancelled by an operator", func(e *env, task elevation.Task) error {
			_, err := e.svc.CancelTask(ctx, e.alice, task.ID, "")
			return err
		}, "ended: cancelled at 2026-11-02T09:01:00Z;"},
		{"past its deadline, not yet swept", func(e *env, task elevation.Task) error {
			e.clk.Advance(3 * time.Hour)
			return nil
		}, "ended: expired at 2026-11-02T11:00:00Z;"},
		{"expired by the sweep", func(e *env, task elevation.Task) error {
			e.clk.Advance(3 * time.Hour)
			return e.svc.Sweep(ctx)
		}, `ended: expired at 2026-11-02T11:00:00Z ("the task reached its deadline")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			task := e.start(e.alpha)
			e.clk.Advance(time.Minute)
			if err := c.end(e, task); err != nil {
				t.Fatal(err)
			}
			_, err := e.svc.TaskFor(ctx, e.alpha.ID.String(), task.ID)
			var ended *elevation.TaskEndedError
			if !errors.Is(err, fault.Conflict) || !errors.As(err, &ended) {
				t.Fatalf("TaskFor: %v, want a TaskEndedError", err)
			}
			msg := err.Error()
			for _, want := range []string{"task " + task.ID + " " + c.want, "open a new task of manifest report-writer"} {
				if !strings.Contains(msg, want) {
					t.Fatalf("TaskFor: %q, want it to say %q", msg, want)
				}
			}
			if strings.Contains(msg, "conflict") {
				t.Fatalf("TaskFor: %q names the fault kind instead of the state", msg)
			}
			// An elevation request says the same, and is recorded.
			_, err = e.svc.Request(ctx, e.alpha, task.ID, "write-draft", "drafts")
			e.wantRefusal(err, fault.Conflict, elevation.ActionRequest, "task "+task.ID+" "+c.want)
		})
	}
}
