package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// The audit log's tree, checkpoints, sink cursors and retention.

type querier interface {
	query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// TreeState returns the tree's size and retention horizon.
func (s *DB) TreeState(ctx context.Context) (audit.TreeState, error) {
	if err := s.syncAudit(ctx); err != nil {
		return audit.TreeState{}, err
	}
	var st audit.TreeState
	err := s.queryRow(ctx, `SELECT size, pruned_before FROM audit_tree WHERE id = 1`).Scan(&st.Size, &st.PrunedBefore)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.TreeState{}, nil
	}
	if err != nil {
		return audit.TreeState{}, fmt.Errorf("store: read audit tree: %w", err)
	}
	return st, nil
}

// ReadHashes returns the stored hashes at indexes, the zero hash for any
// that is missing.
func (s *DB) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	if err := s.syncAudit(ctx); err != nil {
		return nil, err
	}
	return readHashes(ctx, s, indexes)
}

func readHashes(ctx context.Context, q querier, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	pos := make(map[int64][]int, len(indexes))
	for i, x := range indexes {
		pos[x] = append(pos[x], i)
	}
	const chunk = 500
	for start := 0; start < len(indexes); start += chunk {
		part := indexes[start:min(start+chunk, len(indexes))]
		args := make([]any, len(part))
		for i, x := range part {
			args[i] = x
		}
		rows, err := q.query(ctx, `SELECT idx, hash FROM audit_hashes WHERE idx IN (`+
			strings.TrimSuffix(strings.Repeat("?, ", len(part)), ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("store: read audit hashes: %w", err)
		}
		for rows.Next() {
			var (
				idx int64
				h   []byte
			)
			if err := rows.Scan(&idx, &h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: read audit hashes: %w", err)
			}
			if len(h) != tlog.HashSize {
				continue // a mangled hash reads as missing
			}
			for _, i := range pos[idx] {
				copy(out[i][:], h)
			}
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("store: read audit hashes: %w", err)
		}
	}
	return out, nil
}

// MaxHashIndex returns the largest stored hash index, or -1 when there is
// none. The index is the primary key, so this reads one entry of it.
func (s *DB) MaxHashIndex(ctx context.Context) (int64, error) {
	if err := s.syncAudit(ctx); err != nil {
		return 0, err
	}
	var idx sql.NullInt64
	if err := s.queryRow(ctx, `SELECT MAX(idx) FROM audit_hashes`).Scan(&idx); err != nil {
		return 0, fmt.Errorf("store: read audit hashes: %w", err)
	}
	if !idx.Valid {
		return -1, nil
	}
	return idx.Int64, nil
}

// AddCheckpoint stores a signed checkpoint; a size already stored is kept.
func (s *DB) AddCheckpoint(ctx context.Context, cp audit.StoredCheckpoint) error {
	_, err := s.exec(ctx, `INSERT INTO audit_checkpoints (size, issued_at, note) VALUES (?, ?, ?) ON CONFLICT (size) DO NOTHING`,
		cp.Size, ts(cp.IssuedAt), cp.Note)
	if err != nil {
		return fmt.Errorf("store: add audit checkpoint: %w", err)
	}
	return nil
}

// LatestCheckpoint returns the checkpoint of the largest tree.
func (s *DB) LatestCheckpoint(ctx context.Context) (audit.StoredCheckpoint, bool, error) {
	cps, err := s.checkpoints(ctx, `SELECT size, issued_at, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`)
	if err != nil || len(cps) == 0 {
		return audit.StoredCheckpoint{}, false, err
	}
	return cps[0], true, nil
}

// Checkpoints returns up to limit checkpoints with size > after, smallest
// first.
func (s *DB) Checkpoints(ctx context.Context, after int64, limit int) ([]audit.StoredCheckpoint, error) {
	if limit <= 0 {
		limit = 1000
	}
	return s.checkpoints(ctx, fmt.Sprintf(`SELECT size, issued_at, note FROM audit_checkpoints WHERE size > ? ORDER BY size LIMIT %d`, limit), after)
}

func (s *DB) checkpoints(ctx context.Context, q string, args ...any) ([]audit.StoredCheckpoint, error) {
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: read audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []audit.StoredCheckpoint
	for rows.Next() {
		var (
			cp audit.StoredCheckpoint
			at sql.NullInt64
		)
		if err := rows.Scan(&cp.Size, &at, &cp.Note); err != nil {
			return nil, fmt.Errorf("store: read audit checkpoints: %w", err)
		}
		cp.IssuedAt = fromTS(at)
		out = append(out, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read audit checkpoints: %w", err)
	}
	return out, nil
}

// Cursor returns the seq of the last event a sink delivered, -1 if it has
// delivered none.
func (s *DB) Cursor(ctx context.Context, name string) (int64, error) {
	var seq int64
	err := s.queryRow(ctx, `SELECT seq FROM audit_cursors WHERE name = ?`, name).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read audit cursor %s: %w", name, err)
	}
	return seq, nil
}

// AdvanceCursor records that a sink delivered every event up to seq. A
// cursor never moves back, so a slow replica cannot undo a faster one.
func (s *DB) AdvanceCursor(ctx context.Context, name string, seq int64, at time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO audit_cursors (name, seq, updated_at) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at WHERE audit_cursors.seq < excluded.seq`,
		name, seq, ts(at))
	if err != nil {
		return fmt.Errorf("store: advance audit cursor %s: %w", name, err)
	}
	return nil
}

// Cursors returns every sink's cursor.
func (s *DB) Cursors(ctx context.Context) (map[string]int64, error) {
	rows, err := s.query(ctx, `SELECT name, seq FROM audit_cursors`)
	if err != nil {
		return nil, fmt.Errorf("store: read audit cursors: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			name string
			seq  int64
		)
		if err := rows.Scan(&name, &seq); err != nil {
			return nil, fmt.Errorf("store: read audit cursors: %w", err)
		}
		out[name] = seq
	}
	return out, rows.Err()
}

// PruneEvents deletes the bodies of events below before and raises the
// retention horizon; the tree's hashes stay. It returns how many events
// were deleted. The caller has archived them and recorded the prune.
func (s *DB) PruneEvents(ctx context.Context, before int64) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *Tx) error {
		if err := s.lockAudit(ctx, tx); err != nil {
			return err
		}
		var size, pruned int64
		if err := tx.queryRow(ctx, `SELECT size, pruned_before FROM audit_tree WHERE id = 1`).Scan(&size, &pruned); err != nil {
			return fmt.Errorf("store: read audit tree: %w", err)
		}
		if before > size {
			return fmt.Errorf("%w: cannot prune below %d: the log has %d events", fault.Invalid, before, size)
		}
		if before <= pruned {
			return nil
		}
		res, err := tx.exec(ctx, `DELETE FROM audit_events WHERE seq < ?`, before)
		if err != nil {
			return fmt.Errorf("store: prune audit events: %w", err)
		}
		n, _ = res.RowsAffected()
		if _, err := tx.exec(ctx, `UPDATE audit_tree SET pruned_before = ? WHERE id = 1`, before); err != nil {
			return fmt.Errorf("store: prune audit events: %w", err)
		}
		return nil
	})
	return n, err
}
