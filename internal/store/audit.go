package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

var (
	_ audit.Store  = (*DB)(nil)
	_ audit.Reader = (*DB)(nil)
)

// auditLockID serializes appends between PostgreSQL replicas so that
// sequence numbers stay contiguous. SQLite's immediate transactions already
// serialize writers.
const auditLockID = 0x61756474 // "audt"

// AppendEvents commits rows with consecutive sequence numbers.
func (s *DB) AppendEvents(ctx context.Context, rows []audit.Row) (int64, error) {
	var first int64
	err := s.tx(ctx, func(tx *Tx) error {
		if s.dialect == postgresDialect {
			if _, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(?)`, auditLockID); err != nil {
				return fmt.Errorf("store: lock audit log: %w", err)
			}
		}
		if err := tx.queryRow(ctx, `SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_events`).Scan(&first); err != nil {
			return fmt.Errorf("store: next audit sequence: %w", err)
		}
		// One multi-row INSERT per chunk keeps a large group commit to a few
		// round trips.
		const chunk = 100
		for start := 0; start < len(rows); start += chunk {
			part := rows[start:min(start+chunk, len(rows))]
			var b strings.Builder
			b.WriteString(`INSERT INTO audit_events (seq, time, actor_kind, actor_id, action, target, decision, task, body) VALUES `)
			args := make([]any, 0, len(part)*9)
			for i, r := range part {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?)")
				args = append(args, first+int64(start+i), ts(r.Time), r.ActorKind, r.ActorID, r.Action, r.Target, r.Decision, r.Task, r.Body)
			}
			if _, err := tx.exec(ctx, b.String(), args...); err != nil {
				return fmt.Errorf("store: append audit events: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return first, nil
}

// Events returns events in sequence order.
func (s *DB) Events(ctx context.Context, f audit.Query) ([]audit.Row, error) {
	q := `SELECT seq, time, actor_kind, actor_id, action, target, decision, task, body FROM audit_events WHERE seq > ?`
	args := []any{f.AfterSeq}
	if len(f.Actions) > 0 {
		q += ` AND action IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(f.Actions)), ", ") + `)`
		for _, a := range f.Actions {
			args = append(args, a)
		}
	}
	q += ` ORDER BY seq`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: read audit events: %w", err)
	}
	defer rows.Close()
	var out []audit.Row
	for rows.Next() {
		var (
			r audit.Row
			t sql.NullInt64
		)
		if err := rows.Scan(&r.Seq, &t, &r.ActorKind, &r.ActorID, &r.Action, &r.Target, &r.Decision, &r.Task, &r.Body); err != nil {
			return nil, fmt.Errorf("store: read audit events: %w", err)
		}
		r.Time = fromTS(t)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read audit events: %w", err)
	}
	return out, nil
}
