package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Baseline returns an agent's stored baseline state and the seq of the
// last event it learned from; nil and -1 when none is stored.
func (s *DB) Baseline(ctx context.Context, agent string) ([]byte, int64, error) {
	var (
		state   []byte
		through int64
	)
	err := s.queryRow(ctx, `SELECT state, through FROM baselines WHERE agent = ?`, agent).Scan(&state, &through)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, -1, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: read baseline of %s: %w", agent, err)
	}
	return state, through, nil
}

// PutBaseline stores an agent's baseline state learned through event seq
// through. A stored state never moves back: a replica that learned less
// cannot replace what another learned.
func (s *DB) PutBaseline(ctx context.Context, agent string, through int64, state []byte, at time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO baselines (agent, through, state, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (agent) DO UPDATE SET through = excluded.through, state = excluded.state, updated_at = excluded.updated_at
WHERE baselines.through < excluded.through`, agent, through, state, ts(at))
	if err != nil {
		return fmt.Errorf("store: store baseline of %s: %w", agent, err)
	}
	return nil
}
