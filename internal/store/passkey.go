package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/console"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

var _ console.Store = (*DB)(nil)

// CreatePasskeyLink stores a registration link's hash.
func (s *DB) CreatePasskeyLink(ctx context.Context, l console.Link) error {
	_, err := s.exec(ctx, `INSERT INTO passkey_links (hash, operator, expires_at, created_at, created_by) VALUES (?, ?, ?, ?, ?)`,
		l.Hash, l.Operator, ts(l.ExpiresAt), ts(l.CreatedAt), l.CreatedBy)
	if isUnique(err) {
		return fmt.Errorf("%w: passkey link exists", fault.Conflict)
	}
	if err != nil {
		return fmt.Errorf("store: create passkey link: %w", err)
	}
	return nil
}

// PasskeyLink returns a registration link by hash.
func (s *DB) PasskeyLink(ctx context.Context, hash string) (console.Link, error) {
	var (
		l                      console.Link
		expires, created, used sql.NullInt64
	)
	err := s.queryRow(ctx, `SELECT hash, operator, expires_at, created_at, created_by, used_at FROM passkey_links WHERE hash = ?`, hash).
		Scan(&l.Hash, &l.Operator, &expires, &created, &l.CreatedBy, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return l, fmt.Errorf("%w: passkey link", fault.NotFound)
	}
	if err != nil {
		return l, fmt.Errorf("store: get passkey link: %w", err)
	}
	l.ExpiresAt, l.CreatedAt, l.UsedAt = fromTS(expires), fromTS(created), nonZeroTS(used)
	return l, nil
}

// AddPasskey stores a passkey and spends its registration link in one
// transaction.
func (s *DB) AddPasskey(ctx context.Context, p console.Passkey, link string, now time.Time) error {
	return s.tx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `UPDATE passkey_links SET used_at = ? WHERE hash = ? AND operator = ? AND used_at = 0 AND expires_at > ?`,
			ts(now), link, p.Operator, ts(now))
		if err != nil {
			return fmt.Errorf("store: spend passkey link: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("%w: the registration link is used, expired or another operator's", fault.Conflict)
		}
		_, err = tx.exec(ctx, `INSERT INTO passkeys (id, operator, credential, created_at) VALUES (?, ?, ?, ?)`,
			p.ID, p.Operator, p.Credential, ts(p.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("%w: passkey already registered", fault.Conflict)
		}
		if err != nil {
			return fmt.Errorf("store: add passkey: %w", err)
		}
		return nil
	})
}

func scanPasskey(sc rowScanner) (console.Passkey, error) {
	var (
		p                      console.Passkey
		created, used, revoked sql.NullInt64
	)
	if err := sc.Scan(&p.ID, &p.Operator, &p.Credential, &created, &used, &revoked); err != nil {
		return p, err
	}
	p.CreatedAt, p.LastUsedAt, p.RevokedAt = fromTS(created), nonZeroTS(used), nonZeroTS(revoked)
	return p, nil
}

// nonZeroTS reads a time stored with 0 for none.
func nonZeroTS(v sql.NullInt64) time.Time {
	if !v.Valid || v.Int64 == 0 {
		return time.Time{}
	}
	return fromTS(v)
}

const passkeyCols = `id, operator, credential, created_at, last_used_at, revoked_at`

// Passkey returns a passkey by credential id.
func (s *DB) Passkey(ctx context.Context, id []byte) (console.Passkey, error) {
	p, err := scanPasskey(s.queryRow(ctx, `SELECT `+passkeyCols+` FROM passkeys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%w: passkey", fault.NotFound)
	}
	if err != nil {
		return p, fmt.Errorf("store: get passkey: %w", err)
	}
	return p, nil
}

// PasskeysOf lists an operator's passkeys.
func (s *DB) PasskeysOf(ctx context.Context, operator string) ([]console.Passkey, error) {
	return queryList(ctx, s, "list passkeys", scanPasskey, `SELECT `+passkeyCols+` FROM passkeys WHERE operator = ? ORDER BY created_at`, operator)
}

// RevokePasskeys revokes an operator's working passkeys.
func (s *DB) RevokePasskeys(ctx context.Context, operator string, at time.Time) (int64, error) {
	res, err := s.exec(ctx, `UPDATE passkeys SET revoked_at = ? WHERE operator = ? AND revoked_at = 0`, ts(at), operator)
	if err != nil {
		return 0, fmt.Errorf("store: revoke passkeys: %w", err)
	}
	return res.RowsAffected()
}

// UsePasskey stores a passkey's state after a ceremony, in one statement
// that checks its signature counter grew: of two ceremonies racing, the
// one with the lower counter fails rather than rolling the counter back.
func (s *DB) UsePasskey(ctx context.Context, id, credential []byte, signCount uint32, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE passkeys SET credential = ?, sign_count = ?, last_used_at = ?
WHERE id = ? AND revoked_at = 0 AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`,
		credential, int64(signCount), ts(at), id, int64(signCount), int64(signCount))
	if err != nil {
		return fmt.Errorf("store: use passkey: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	if p, err := s.Passkey(ctx, id); err == nil && p.RevokedAt.IsZero() {
		return fmt.Errorf("%w: the passkey's signature counter did not grow", fault.Conflict)
	}
	return fmt.Errorf("%w: passkey", fault.NotFound)
}

// SpendChallenge records an answered ceremony challenge.
func (s *DB) SpendChallenge(ctx context.Context, hash string, expires, now time.Time) error {
	if _, err := s.exec(ctx, `DELETE FROM console_challenges WHERE expires_at < ?`, ts(now)); err != nil {
		return fmt.Errorf("store: forget spent challenges: %w", err)
	}
	_, err := s.exec(ctx, `INSERT INTO console_challenges (hash, expires_at) VALUES (?, ?)`, hash, ts(expires))
	if isUnique(err) {
		return fmt.Errorf("%w: the challenge was already answered", fault.Conflict)
	}
	if err != nil {
		return fmt.Errorf("store: spend challenge: %w", err)
	}
	return nil
}
