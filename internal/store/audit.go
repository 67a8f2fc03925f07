package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

var (
	_ audit.Store           = (*DB)(nil)
	_ audit.Reader          = (*DB)(nil)
	_ audit.CheckpointStore = (*DB)(nil)
	_ audit.VerifyStore     = (*DB)(nil)
)

// auditLockID serializes appends between PostgreSQL replicas so that
// sequence numbers stay contiguous and each append extends the tree the
// previous one left. SQLite's immediate transactions already serialize
// writers.
const auditLockID = 0x61756474 // "audt"

func (s *DB) lockAudit(ctx context.Context, tx *Tx) error {
	if s.dialect != postgresDialect {
		return nil
	}
	if _, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(?)`, auditLockID); err != nil {
		return fmt.Errorf("store: lock audit log: %w", err)
	}
	return nil
}

// AppendEvents commits rows with consecutive sequence numbers and, in the
// same transaction, the Merkle tree hashes that cover them: a committed
// event is always in the tree, whichever replica wrote it.
//
// On SQLite the rows are made durable in the audit journal and reach the
// tables in a later, larger transaction (see journal.go).
func (s *DB) AppendEvents(ctx context.Context, rows []audit.Row) (int64, error) {
	switch {
	case s.journal != nil:
		return s.journal.append(ctx, rows)
	case s.auditHeld:
		return 0, errors.New("store: opened to read the audit log: the control plane appends to it")
	}
	return s.appendEvents(ctx, rows, -1)
}

// errLogMoved is appendEvents' refusal to place events anywhere but at.
var errLogMoved = errors.New("store: the audit log's end moved")

// appendEvents commits rows to the tables, from sequence number at if at
// is not negative (refusing with errLogMoved if the log ends elsewhere).
func (s *DB) appendEvents(ctx context.Context, rows []audit.Row, at int64) (int64, error) {
	var (
		first int64
		tree  *audit.Frontier
	)
	err := s.rawTx(ctx, func(tx *Tx) error {
		if err := s.lockAudit(ctx, tx); err != nil {
			return err
		}
		var err error
		if tree, err = s.openTree(ctx, tx); err != nil {
			return err
		}
		first = tree.Size()
		if at >= 0 && first != at {
			return fmt.Errorf("%w: the database's log ends at %d, not at %d", errLogMoved, first, at)
		}
		hashes := make([]audit.StoredHash, 0, 2*len(rows)+64)
		for _, r := range rows {
			hs, err := tree.AppendRecord(r.Body)
			if err != nil {
				return fmt.Errorf("store: hash audit event: %w", err)
			}
			hashes = append(hashes, hs...)
		}
		if err := s.insertEvents(ctx, tx, first, rows); err != nil {
			return err
		}
		if err := s.insertHashes(ctx, tx, hashes); err != nil {
			return err
		}
		if _, err := tx.execPrepared(ctx, `UPDATE audit_tree SET size = ? WHERE id = 1`, tree.Size()); err != nil {
			return fmt.Errorf("store: update audit tree: %w", err)
		}
		// Delivered at commit: every replica's followers read it now
		// rather than at their next poll (see Changes).
		return tx.notify(ctx, auditChannel)
	})
	s.frontier.Lock()
	defer s.frontier.Unlock()
	if err != nil {
		s.frontier.f = nil
		return 0, err
	}
	s.frontier.f = tree
	return first, nil
}

// openTree returns the frontier of the stored tree, refusing to extend a
// tree that does not match the stored events: rows inserted or deleted at
// the end behind the log's back must stop the log, not be hashed in. The
// frontier this process left at its last append is reused if the tree has
// not grown since (another replica's append changes the size); reading it
// back costs a query per commit.
func (s *DB) openTree(ctx context.Context, tx *Tx) (*audit.Frontier, error) {
	var size, pruned int64
	row, err := tx.queryRowPrepared(ctx, `SELECT size, pruned_before FROM audit_tree WHERE id = 1`)
	if err == nil {
		err = row.Scan(&size, &pruned)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return s.hashBacklog(ctx, tx)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read audit tree: %w", err)
	}
	var last sql.NullInt64
	row, err = tx.queryRowPrepared(ctx, `SELECT MAX(seq) FROM audit_events`)
	if err == nil {
		err = row.Scan(&last)
	}
	if err != nil {
		return nil, fmt.Errorf("store: next audit sequence: %w", err)
	}
	next := pruned
	if last.Valid {
		next = last.Int64 + 1
	}
	if next != size {
		return nil, fmt.Errorf("store: the audit log holds events up to %d but its tree covers %d; refusing to append until 'bulkhead audit verify' is run", next, size)
	}
	s.frontier.Lock()
	cached := s.frontier.f
	s.frontier.Unlock()
	if cached != nil && cached.Size() == size {
		return cached.Clone(), nil
	}
	idx := audit.FrontierIndexes(size)
	hs, err := readHashes(ctx, tx, idx)
	if err != nil {
		return nil, err
	}
	for i, h := range hs {
		if h == (tlog.Hash{}) {
			return nil, fmt.Errorf("store: audit tree hash %d is missing", idx[i])
		}
	}
	return audit.NewFrontier(size, hs)
}

// hashBacklog hashes the events written before the tree existed (schema
// version 1) and creates the tree's row. It runs once, on the first append
// after the migration.
func (s *DB) hashBacklog(ctx context.Context, tx *Tx) (*audit.Frontier, error) {
	tree, _ := audit.NewFrontier(0, nil)
	rows, err := tx.query(ctx, `SELECT seq, body FROM audit_events ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("store: read audit backlog: %w", err)
	}
	var hashes []audit.StoredHash
	for rows.Next() {
		var (
			seq  int64
			body []byte
		)
		if err := rows.Scan(&seq, &body); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: read audit backlog: %w", err)
		}
		if seq != tree.Size() {
			rows.Close()
			return nil, fmt.Errorf("store: audit backlog has a gap at %d", tree.Size())
		}
		hs, err := tree.AppendRecord(body)
		if err != nil {
			rows.Close()
			return nil, err
		}
		hashes = append(hashes, hs...)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("store: read audit backlog: %w", err)
	}
	if err := s.insertHashes(ctx, tx, hashes); err != nil {
		return nil, err
	}
	if _, err := tx.exec(ctx, `INSERT INTO audit_tree (id, size, pruned_before) VALUES (1, ?, 0)`, tree.Size()); err != nil {
		return nil, fmt.Errorf("store: create audit tree: %w", err)
	}
	if tree.Size() > 0 {
		s.logger.Info("hashed audit events written before the Merkle log existed", "events", tree.Size())
	}
	return tree, nil
}

// insertEvents writes rows from seq first.
func (s *DB) insertEvents(ctx context.Context, tx *Tx, first int64, rows []audit.Row) error {
	err := insertRows(ctx, tx, `INSERT INTO audit_events (seq, time, actor_kind, actor_id, action, target, decision, task, decision_id, body) VALUES `, 10,
		[]int{64, 16, 4, 1}, len(rows), func(dst []any, i int) []any {
			r := rows[i]
			return append(dst, first+int64(i), ts(r.Time), r.ActorKind, r.ActorID, r.Action, r.Target, r.Decision, r.Task, nullIfEmpty(r.DecisionID), r.Body)
		})
	if err != nil {
		return fmt.Errorf("store: append audit events: %w", err)
	}
	return nil
}

// insertHashes writes stored tree hashes.
func (s *DB) insertHashes(ctx context.Context, tx *Tx, hashes []audit.StoredHash) error {
	err := insertRows(ctx, tx, `INSERT INTO audit_hashes (idx, hash) VALUES `, 2,
		[]int{128, 32, 8, 2, 1}, len(hashes), func(dst []any, i int) []any {
			return append(dst, hashes[i].Index, hashes[i].Hash[:])
		})
	if err != nil {
		return fmt.Errorf("store: append audit hashes: %w", err)
	}
	return nil
}

// insertRows inserts n rows of width columns (args appends row i's values)
// with multi-row INSERTs of the given sizes, largest first, each prepared
// once: a batch takes few statements (few round trips on PostgreSQL) and
// none is parsed again (parsing a statement the size of the batch costs
// SQLite more than inserting it).
func insertRows(ctx context.Context, tx *Tx, head string, width int, sizes []int, n int, args func(dst []any, i int) []any) error {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", width), ", ") + ")"
	buf := make([]any, 0, sizes[0]*width)
	for i, k := 0, 0; i < n; {
		size := sizes[k]
		if n-i < size {
			k++
			continue
		}
		st, err := tx.stmt(ctx, head+strings.TrimSuffix(strings.Repeat(row+", ", size), ", "))
		if err != nil {
			return err
		}
		for ; n-i >= size; i += size {
			buf = buf[:0]
			for j := i; j < i+size; j++ {
				buf = args(buf, j)
			}
			if _, err := st.ExecContext(ctx, buf...); err != nil {
				return err
			}
		}
	}
	return nil
}

// Events returns events in sequence order.
func (s *DB) Events(ctx context.Context, f audit.Query) ([]audit.Row, error) {
	if err := s.syncAudit(ctx); err != nil {
		return nil, err
	}
	q := `SELECT seq, time, actor_kind, actor_id, action, target, decision, task, body FROM audit_events WHERE seq > ?`
	args := []any{f.AfterSeq}
	if len(f.Actions) > 0 {
		q += ` AND action IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(f.Actions)), ", ") + `)`
		for _, a := range f.Actions {
			args = append(args, a)
		}
	}
	if f.Subject != "" {
		q += ` AND (actor_id = ? OR target = ?)`
		args = append(args, f.Subject, f.Subject)
	}
	if f.Decision != "" {
		q += ` AND decision = ?`
		args = append(args, string(f.Decision))
	}
	if f.DecisionID != "" {
		q += ` AND decision_id = ?`
		args = append(args, f.DecisionID)
	}
	if !f.Since.IsZero() {
		q += ` AND time >= ?`
		args = append(args, ts(f.Since))
	}
	if !f.Until.IsZero() {
		q += ` AND time < ?`
		args = append(args, ts(f.Until))
	}
	if f.Newest {
		q += ` ORDER BY seq DESC`
	} else {
		q += ` ORDER BY seq`
	}
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
	if f.Newest {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

// nullIfEmpty stores "" as NULL: most events carry no decision id, and the
// index then holds only those that do.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
