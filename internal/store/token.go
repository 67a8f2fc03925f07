package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

var _ token.Store = (*DB)(nil)

// TokenKeys returns every signing key, oldest first.
func (s *DB) TokenKeys(ctx context.Context) ([]token.StoredKey, error) {
	rows, err := s.query(ctx, `SELECT kid, alg, private_sealed, public_jwk, created_at, active_at FROM token_keys ORDER BY active_at`)
	if err != nil {
		return nil, fmt.Errorf("store: token keys: %w", err)
	}
	defer rows.Close()
	var out []token.StoredKey
	for rows.Next() {
		var (
			k               token.StoredKey
			created, active sql.NullInt64
		)
		if err := rows.Scan(&k.KID, &k.Alg, &k.PrivateSealed, &k.PublicJWK, &created, &active); err != nil {
			return nil, fmt.Errorf("store: token keys: %w", err)
		}
		k.CreatedAt, k.ActiveAt = fromTS(created), fromTS(active)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: token keys: %w", err)
	}
	return out, nil
}

// InsertTokenKey stores a signing key; fault.Conflict if its slot is taken.
func (s *DB) InsertTokenKey(ctx context.Context, k token.StoredKey) error {
	_, err := s.exec(ctx, `INSERT INTO token_keys (kid, alg, private_sealed, public_jwk, created_at, active_at) VALUES (?, ?, ?, ?, ?, ?)`,
		k.KID, k.Alg, k.PrivateSealed, k.PublicJWK, ts(k.CreatedAt), ts(k.ActiveAt))
	if isUnique(err) {
		return fmt.Errorf("%w: a signing key for this slot exists", fault.Conflict)
	}
	if err != nil {
		return fmt.Errorf("store: insert token key: %w", err)
	}
	return nil
}

// CreateResource registers a resource.
func (s *DB) CreateResource(ctx context.Context, r token.Resource) error {
	_, err := s.exec(ctx, `INSERT INTO oauth_resources (uri, scopes, created_at, created_by) VALUES (?, ?, ?, ?)`,
		r.URI, strings.Join(r.Scopes, " "), ts(r.CreatedAt), r.CreatedBy)
	if isUnique(err) {
		return fmt.Errorf("%w: resource %q is already registered", fault.Conflict, r.URI)
	}
	if err != nil {
		return fmt.Errorf("store: create resource: %w", err)
	}
	return nil
}

func scanResource(sc interface{ Scan(...any) error }) (token.Resource, error) {
	var (
		r       token.Resource
		scopes  string
		created sql.NullInt64
	)
	if err := sc.Scan(&r.URI, &scopes, &created, &r.CreatedBy); err != nil {
		return r, err
	}
	if scopes != "" {
		r.Scopes = strings.Fields(scopes)
	}
	r.CreatedAt = fromTS(created)
	return r, nil
}

// GetResource returns a registered resource.
func (s *DB) GetResource(ctx context.Context, uri string) (token.Resource, error) {
	r, err := scanResource(s.queryRow(ctx, `SELECT uri, scopes, created_at, created_by FROM oauth_resources WHERE uri = ?`, uri))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("%w: resource %q", fault.NotFound, uri)
	}
	if err != nil {
		return r, fmt.Errorf("store: get resource: %w", err)
	}
	return r, nil
}

// ListResources lists resources by URI.
func (s *DB) ListResources(ctx context.Context) ([]token.Resource, error) {
	return queryList(ctx, s, "list resources", scanResource, `SELECT uri, scopes, created_at, created_by FROM oauth_resources ORDER BY uri`)
}

// DeleteResource unregisters a resource.
func (s *DB) DeleteResource(ctx context.Context, uri string) error {
	res, err := s.exec(ctx, `DELETE FROM oauth_resources WHERE uri = ?`, uri)
	if err != nil {
		return fmt.Errorf("store: delete resource: %w", err)
	}
	return oneRow(res, "resource "+uri)
}

// RevokeToken records a revoked token id; revoking twice keeps the first.
func (s *DB) RevokeToken(ctx context.Context, r token.Revoked) error {
	_, err := s.exec(ctx, `INSERT INTO revoked_tokens (jti, revoked_at, expires_at, revoked_by, reason) VALUES (?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING`,
		r.JTI, ts(r.RevokedAt), ts(r.ExpiresAt), r.RevokedBy, r.Reason)
	if err != nil {
		return fmt.Errorf("store: revoke token: %w", err)
	}
	return nil
}

// RevokedTokens returns which of jtis are revoked.
func (s *DB) RevokedTokens(ctx context.Context, jtis []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(jtis) == 0 {
		return out, nil
	}
	args := make([]any, len(jtis))
	for i, j := range jtis {
		args[i] = j
	}
	rows, err := s.query(ctx, `SELECT jti FROM revoked_tokens WHERE jti IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(jtis)), ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: revoked tokens: %w", err)
	}
	found, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	for _, j := range found {
		out[j] = true
	}
	return out, nil
}

// UseClientAssertion records an assertion id once. Ids that expired well
// before this assertion's expiry (assertions live minutes) are pruned on the
// way: an assertion that old is refused for its exp anyway.
func (s *DB) UseClientAssertion(ctx context.Context, jti string, expires time.Time) error {
	if _, err := s.exec(ctx, `DELETE FROM client_assertions WHERE expires_at < ?`, ts(expires.Add(-2*time.Hour))); err != nil {
		return fmt.Errorf("store: prune client assertions: %w", err)
	}
	_, err := s.exec(ctx, `INSERT INTO client_assertions (jti, expires_at) VALUES (?, ?)`, jti, ts(expires))
	if isUnique(err) {
		return fmt.Errorf("%w: client assertion %q was already used", fault.Conflict, jti)
	}
	if err != nil {
		return fmt.Errorf("store: record client assertion: %w", err)
	}
	return nil
}
