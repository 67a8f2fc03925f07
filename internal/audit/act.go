package audit

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Recorder commits events; *Log implements it.
type Recorder interface {
	Record(ctx context.Context, ev Event) (Event, error)
}

// Act is the write-first pattern every service follows: it records ev as
// allowed, and only once that record is committed runs do. If the record
// cannot be written, do never runs and the error wraps fault.Unavailable.
// If do fails, a second record (decision failed, pointing at the first)
// says so, so the log never claims an effect that did not happen.
func Act(ctx context.Context, rec Recorder, logger *slog.Logger, ev Event, do func() error) error {
	ev.Decision = Allow
	allowed, err := rec.Record(ctx, ev)
	if err != nil {
		return fmt.Errorf("%w: %s refused because the audit log is unavailable", fault.Unavailable, ev.Action)
	}
	if err := do(); err != nil {
		failed := ev
		failed.Decision = Failed
		failed.Time = time.Time{}
		failed.Reasons = []string{err.Error()}
		failed.Detail = maps.Clone(ev.Detail)
		if failed.Detail == nil {
			failed.Detail = map[string]string{}
		}
		failed.Detail["allowed_seq"] = strconv.FormatInt(allowed.Seq, 10)
		if _, aerr := rec.Record(ctx, failed); aerr != nil {
			logger.Error("could not record a failed action", "action", ev.Action, "target", ev.Target, "err", aerr)
		}
		return err
	}
	return nil
}

// Refuse records ev as a denial with why as its reason and reports whether
// the record was committed. The refusal stands either way: a denial is
// never turned into an allow because it could not be written.
func Refuse(ctx context.Context, rec Recorder, logger *slog.Logger, ev Event, why error) bool {
	ev.Decision = Deny
	ev.Reasons = append(ev.Reasons, why.Error())
	if _, err := rec.Record(ctx, ev); err != nil {
		logger.Error("could not record a refusal", "action", ev.Action, "target", ev.Target, "reason", why, "err", err)
		return false
	}
	return true
}
