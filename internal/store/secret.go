package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/secret"
)

var _ secret.Store = (*DB)(nil)

// A deleted secret is a row whose sealed value is NULL (a tombstone): it
// keeps the version count going.

// SecretHead returns the metadata of name's latest version and whether it
// is live; the zero Meta if name was never set.
func (s *DB) SecretHead(ctx context.Context, name string) (secret.Meta, bool, error) {
	var (
		m                 secret.Meta
		live              int
		created, modified sql.NullInt64
	)
	err := s.queryRow(ctx, `SELECT name, version, CASE WHEN sealed IS NULL THEN 0 ELSE 1 END, created_at, updated_at, updated_by FROM secrets WHERE name = ?`, name).
		Scan(&m.Name, &m.Version, &live, &created, &modified, &m.UpdatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return secret.Meta{}, false, nil
	}
	if err != nil {
		return secret.Meta{}, false, fmt.Errorf("store: secret head: %w", err)
	}
	m.CreatedAt, m.UpdatedAt = fromTS(created), fromTS(modified)
	return m, live == 1, nil
}

// PutSecret stores r as version r.Version of its name, if the latest
// version is r.Version-1; fault.Conflict otherwise.
func (s *DB) PutSecret(ctx context.Context, r secret.Record) error {
	if r.Version < 1 || len(r.Sealed) == 0 {
		return fmt.Errorf("store: put secret %q: version %d with %d sealed bytes", r.Name, r.Version, len(r.Sealed))
	}
	if r.Version == 1 {
		_, err := s.exec(ctx, `INSERT INTO secrets (name, version, sealed, created_at, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?)`,
			r.Name, r.Version, r.Sealed, ts(r.CreatedAt), ts(r.UpdatedAt), r.UpdatedBy)
		if isUnique(err) {
			return fmt.Errorf("%w: secret %q changed meanwhile; try again", fault.Conflict, r.Name)
		}
		if err != nil {
			return fmt.Errorf("store: put secret: %w", err)
		}
		return nil
	}
	// Compare-and-set on the version. A tombstone coming back to life gets
	// a new creation time; a live secret keeps its own.
	res, err := s.exec(ctx, `UPDATE secrets SET version = ?, sealed = ?, created_at = CASE WHEN sealed IS NULL THEN ? ELSE created_at END, updated_at = ?, updated_by = ? WHERE name = ? AND version = ?`,
		r.Version, r.Sealed, ts(r.CreatedAt), ts(r.UpdatedAt), r.UpdatedBy, r.Name, r.Version-1)
	if err != nil {
		return fmt.Errorf("store: put secret: %w", err)
	}
	return casRow(res, r.Name)
}

func casRow(res sql.Result, name string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: rows affected: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: secret %q changed meanwhile; try again", fault.Conflict, name)
	}
	return nil
}

func scanSecret(sc interface{ Scan(...any) error }, sealed *[]byte) (secret.Meta, error) {
	var (
		m                 secret.Meta
		created, modified sql.NullInt64
	)
	dest := []any{&m.Name, &m.Version, &created, &modified, &m.UpdatedBy}
	if sealed != nil {
		dest = append(dest, sealed)
	}
	if err := sc.Scan(dest...); err != nil {
		return m, err
	}
	m.CreatedAt, m.UpdatedAt = fromTS(created), fromTS(modified)
	return m, nil
}

// GetSecret returns a live secret with its sealed value.
func (s *DB) GetSecret(ctx context.Context, name string) (secret.Record, error) {
	var r secret.Record
	m, err := scanSecret(s.queryRow(ctx, `SELECT name, version, created_at, updated_at, updated_by, sealed FROM secrets WHERE name = ? AND sealed IS NOT NULL`, name), &r.Sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("%w: secret %q", fault.NotFound, name)
	}
	if err != nil {
		return r, fmt.Errorf("store: get secret: %w", err)
	}
	r.Meta = m
	return r, nil
}

// ListSecrets lists live secrets by name, without their sealed values.
func (s *DB) ListSecrets(ctx context.Context) ([]secret.Meta, error) {
	scan := func(sc rowScanner) (secret.Meta, error) { return scanSecret(sc, nil) }
	return queryList(ctx, s, "list secrets", scan, `SELECT name, version, created_at, updated_at, updated_by FROM secrets WHERE sealed IS NOT NULL ORDER BY name`)
}

// DeleteSecret deletes live version version of name, leaving a tombstone;
// fault.Conflict if name is not live at that version.
func (s *DB) DeleteSecret(ctx context.Context, name string, version int64, at time.Time, by string) error {
	res, err := s.exec(ctx, `UPDATE secrets SET sealed = NULL, updated_at = ?, updated_by = ? WHERE name = ? AND version = ? AND sealed IS NOT NULL`,
		ts(at), by, name, version)
	if err != nil {
		return fmt.Errorf("store: delete secret: %w", err)
	}
	return casRow(res, name)
}
