// Package run runs a process's long-lived components together: the control
// plane's servers and loops, the in-process gateway, the standalone
// gateway. One runner for all of them, so that every one stops the same
// way: when any component ends, the others are canceled, and the first
// error is what the process exits with.
//
// Jobs that must run on one replica at a time (signing checkpoints,
// sweeping expiries, delivering the audit webhook) run under Exclusive,
// which holds a leader lease while the job runs.
package run

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"
)

// Component is one named part of a process. Run runs until ctx ends and
// then returns nil; returning earlier, with or without an error, stops
// the whole group: a process with a component missing is not the process
// that was configured.
type Component struct {
	Name string
	Run  func(ctx context.Context) error
}

// Func names fn as a component.
func Func(name string, fn func(ctx context.Context) error) Component {
	return Component{Name: name, Run: fn}
}

// Group runs every component until ctx ends or one of them returns, then
// cancels the rest, waits for all of them, and returns the first error,
// prefixed with the name of the component that returned it.
func Group(ctx context.Context, logger *slog.Logger, components ...Component) error {
	g, gctx := errgroup.WithContext(ctx)
	// errgroup cancels on the first error only; a component that returns
	// nil before its time ends the group too.
	gctx, cancel := context.WithCancel(gctx)
	defer cancel()
	for _, c := range components {
		g.Go(func() error {
			err := c.Run(gctx)
			stopping := gctx.Err() != nil
			cancel()
			switch {
			case err != nil:
				logger.Error("component failed; stopping the others", "component", c.Name, "err", err)
				return fmt.Errorf("%s: %w", c.Name, err)
			case !stopping:
				logger.Warn("component ended on its own; stopping the others", "component", c.Name)
			default:
				logger.Debug("component stopped", "component", c.Name)
			}
			return nil
		})
	}
	return g.Wait()
}
