package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
)

var _ identity.Store = (*DB)(nil)

const agentCols = `name, spiffe_id, status, svid_ttl_us, created_at, created_by, updated_at, scopes, parent, delegated_jti, ek_pin`

func scanAgent(sc interface{ Scan(...any) error }) (identity.Agent, error) {
	var (
		a                identity.Agent
		ttl              int64
		created, updated sql.NullInt64
		status, scopes   string
	)
	if err := sc.Scan(&a.Name, &a.SPIFFEID, &status, &ttl, &created, &a.CreatedBy, &updated, &scopes, &a.Parent, &a.DelegatedJTI, &a.EKPin); err != nil {
		return a, err
	}
	if scopes != "" {
		a.Scopes = strings.Fields(scopes)
	}
	a.Status = identity.Status(status)
	a.SVIDTTL = time.Duration(ttl) * time.Microsecond
	a.CreatedAt, a.UpdatedAt = fromTS(created), fromTS(updated)
	return a, nil
}

// CreateAgent registers an agent; fault.Conflict if the name or ID exists.
func (s *DB) CreateAgent(ctx context.Context, a identity.Agent) error {
	_, err := s.exec(ctx, `INSERT INTO agents (`+agentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.Name, a.SPIFFEID, string(a.Status), a.SVIDTTL.Microseconds(), ts(a.CreatedAt), a.CreatedBy, ts(a.UpdatedAt),
		strings.Join(a.Scopes, " "), a.Parent, a.DelegatedJTI, a.EKPin)
	if isUnique(err) {
		return fmt.Errorf("%w: agent %q already exists", fault.Conflict, a.Name)
	}
	if err != nil {
		return fmt.Errorf("store: create agent: %w", err)
	}
	return nil
}

// GetAgent returns an agent by name.
func (s *DB) GetAgent(ctx context.Context, name string) (identity.Agent, error) {
	a, err := scanAgent(s.queryRow(ctx, `SELECT `+agentCols+` FROM agents WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("%w: agent %q", fault.NotFound, name)
	}
	if err != nil {
		return a, fmt.Errorf("store: get agent: %w", err)
	}
	return a, nil
}

// ListAgents returns every agent, by name.
func (s *DB) ListAgents(ctx context.Context) ([]identity.Agent, error) {
	return queryList(ctx, s, "list agents", scanAgent, `SELECT `+agentCols+` FROM agents ORDER BY name`)
}

// SetAgentStatus changes an agent's status.
func (s *DB) SetAgentStatus(ctx context.Context, name string, st identity.Status, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE agents SET status = ?, updated_at = ? WHERE name = ?`, string(st), ts(at), name)
	if err != nil {
		return fmt.Errorf("store: set agent status: %w", err)
	}
	return oneRow(res, "agent "+name)
}

// SetAgentEK records the endorsement key an agent's TPM was proven to
// have, if the agent's pin is still was (a compare-and-set).
func (s *DB) SetAgentEK(ctx context.Context, name, was, ek string, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE agents SET ek_pin = ?, updated_at = ? WHERE name = ? AND ek_pin = ?`, ek, ts(at), name, was)
	if err != nil {
		return fmt.Errorf("store: set agent EK: %w", err)
	}
	return oneRow(res, "agent "+name+" with EK pin "+was)
}

// SetAgentScopes replaces an agent's allowed scopes.
func (s *DB) SetAgentScopes(ctx context.Context, name string, scopes []string, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE agents SET scopes = ?, updated_at = ? WHERE name = ?`, strings.Join(scopes, " "), ts(at), name)
	if err != nil {
		return fmt.Errorf("store: set agent scopes: %w", err)
	}
	return oneRow(res, "agent "+name)
}

// AgentsDelegatedBy lists sub-agents created with token jti.
func (s *DB) AgentsDelegatedBy(ctx context.Context, jti string) ([]string, error) {
	rows, err := s.query(ctx, `SELECT name FROM agents WHERE delegated_jti = ? ORDER BY name`, jti)
	if err != nil {
		return nil, fmt.Errorf("store: delegated agents: %w", err)
	}
	return scanStrings(rows)
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("store: scan: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: scan: %w", err)
	}
	return out, nil
}

func oneRow(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: rows affected: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", fault.NotFound, what)
	}
	return nil
}

// CreateJoinToken stores a join token's hash.
func (s *DB) CreateJoinToken(ctx context.Context, t identity.JoinToken) error {
	q, who := `INSERT INTO join_tokens (hash, agent, expires_at, created_at, created_by) VALUES (?, ?, ?, ?, ?)`, t.Agent
	if t.Component != "" {
		q, who = `INSERT INTO component_join_tokens (hash, spiffe_id, expires_at, created_at, created_by) VALUES (?, ?, ?, ?, ?)`, t.Component
	}
	_, err := s.exec(ctx, q, t.Hash, who, ts(t.ExpiresAt), ts(t.CreatedAt), t.CreatedBy)
	if isUnique(err) {
		return fmt.Errorf("%w: join token exists", fault.Conflict)
	}
	if err != nil {
		return fmt.Errorf("store: create join token: %w", err)
	}
	return nil
}

// GetJoinToken looks a join token up by hash, an agent's or a component's.
func (s *DB) GetJoinToken(ctx context.Context, hash string) (identity.JoinToken, error) {
	for _, q := range []struct {
		table, col string
		component  bool
	}{{"join_tokens", "agent", false}, {"component_join_tokens", "spiffe_id", true}} {
		var (
			t                  identity.JoinToken
			who                string
			exp, created, used sql.NullInt64
		)
		err := s.queryRow(ctx, `SELECT hash, `+q.col+`, expires_at, created_at, created_by, used_at FROM `+q.table+` WHERE hash = ?`, hash).
			Scan(&t.Hash, &who, &exp, &created, &t.CreatedBy, &used)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return t, fmt.Errorf("store: get join token: %w", err)
		}
		if q.component {
			t.Component = who
		} else {
			t.Agent = who
		}
		t.ExpiresAt, t.CreatedAt, t.UsedAt = fromTS(exp), fromTS(created), fromTS(used)
		return t, nil
	}
	return identity.JoinToken{}, fmt.Errorf("%w: join token", fault.NotFound)
}

// IssueCert records c, checking the agent and redeeming a join token.
func (s *DB) IssueCert(ctx context.Context, c identity.Cert, redeemHash string, now time.Time) error {
	return s.tx(ctx, func(tx *Tx) error {
		if c.Agent != "" {
			// FOR UPDATE orders this against a concurrent revocation on
			// PostgreSQL; SQLite's immediate transaction already does.
			lock := ""
			if s.dialect == postgresDialect {
				lock = " FOR UPDATE"
			}
			var status string
			err := tx.queryRow(ctx, `SELECT status FROM agents WHERE name = ?`+lock, c.Agent).Scan(&status)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: agent %q", fault.NotFound, c.Agent)
			}
			if err != nil {
				return fmt.Errorf("store: check agent: %w", err)
			}
			if identity.Status(status) != identity.StatusActive {
				return fmt.Errorf("%w: agent %q is %s", fault.Conflict, c.Agent, status)
			}
		}
		if redeemHash != "" {
			q, who := `UPDATE join_tokens SET used_at = ? WHERE hash = ? AND agent = ? AND used_at IS NULL AND expires_at > ?`, c.Agent
			if c.Agent == "" {
				q, who = `UPDATE component_join_tokens SET used_at = ? WHERE hash = ? AND spiffe_id = ? AND used_at IS NULL AND expires_at > ?`, c.SPIFFEID
			}
			res, err := tx.exec(ctx, q, ts(now), redeemHash, who, ts(now))
			if err != nil {
				return fmt.Errorf("store: redeem join token: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return fmt.Errorf("%w: join token already used or expired", fault.Conflict)
			}
		}
		return insertCert(ctx, tx, c)
	})
}

type execer interface {
	exec(ctx context.Context, query string, args ...any) (sql.Result, error)
}

const certCols = `serial, spiffe_id, agent, not_before, not_after, issued_at, issued_by, der, revoked_at, revoked_reason, x5t_s256`

func insertCert(ctx context.Context, e execer, c identity.Cert) error {
	var agent any
	if c.Agent != "" {
		agent = c.Agent
	}
	_, err := e.exec(ctx, `INSERT INTO certificates (`+certCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Serial, c.SPIFFEID, agent, ts(c.NotBefore), ts(c.NotAfter), ts(c.IssuedAt), c.IssuedBy, c.DER, ts(c.RevokedAt), c.RevokedReason, c.X5T)
	if isUnique(err) {
		return fmt.Errorf("%w: certificate serial %s exists", fault.Conflict, c.Serial)
	}
	if err != nil {
		return fmt.Errorf("store: insert certificate: %w", err)
	}
	return nil
}

func scanCert(sc interface{ Scan(...any) error }) (identity.Cert, error) {
	var (
		c                       identity.Cert
		agent                   sql.NullString
		nb, na, issued, revoked sql.NullInt64
	)
	if err := sc.Scan(&c.Serial, &c.SPIFFEID, &agent, &nb, &na, &issued, &c.IssuedBy, &c.DER, &revoked, &c.RevokedReason, &c.X5T); err != nil {
		return c, err
	}
	c.Agent = agent.String
	c.NotBefore, c.NotAfter, c.IssuedAt, c.RevokedAt = fromTS(nb), fromTS(na), fromTS(issued), fromTS(revoked)
	return c, nil
}

// GetCert returns a certificate by serial.
func (s *DB) GetCert(ctx context.Context, serial string) (identity.Cert, error) {
	c, err := scanCert(s.queryRow(ctx, `SELECT `+certCols+` FROM certificates WHERE serial = ?`, serial))
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("%w: certificate %s", fault.NotFound, serial)
	}
	if err != nil {
		return c, fmt.Errorf("store: get certificate: %w", err)
	}
	return c, nil
}

// GetCertByThumbprint returns the certificate with a cnf thumbprint.
func (s *DB) GetCertByThumbprint(ctx context.Context, x5t string) (identity.Cert, error) {
	c, err := scanCert(s.queryRow(ctx, `SELECT `+certCols+` FROM certificates WHERE x5t_s256 = ? AND x5t_s256 <> ''`, x5t))
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("%w: certificate with thumbprint %s", fault.NotFound, x5t)
	}
	if err != nil {
		return c, fmt.Errorf("store: get certificate: %w", err)
	}
	return c, nil
}

func (s *DB) listCerts(ctx context.Context, where string, args ...any) ([]identity.Cert, error) {
	return queryList(ctx, s, "list certificates", scanCert, `SELECT `+certCols+` FROM certificates WHERE `+where+` ORDER BY issued_at, serial`, args...)
}

// ListCerts returns an agent's certificates, oldest first.
func (s *DB) ListCerts(ctx context.Context, agent string) ([]identity.Cert, error) {
	return s.listCerts(ctx, `agent = ?`, agent)
}

// RevokedCerts lists revoked, unexpired certificates.
func (s *DB) RevokedCerts(ctx context.Context, now time.Time) ([]identity.Cert, error) {
	return s.listCerts(ctx, `revoked_at IS NOT NULL AND not_after > ?`, ts(now))
}

// RevokeTree revokes root's sub-agents (and root if includeRoot) and all
// their certificates. Sub-agent names extend their parent's with "/sub/",
// so the subtree is a name prefix; substr is used rather than LIKE because
// names may contain LIKE's wildcard "_".
func (s *DB) RevokeTree(ctx context.Context, root string, includeRoot bool, at time.Time, reason string) ([]string, []string, error) {
	var agents, serials []string
	prefix := root + "/sub/"
	err := s.tx(ctx, func(tx *Tx) error {
		var n int
		if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM agents WHERE name = ?`, root).Scan(&n); err != nil {
			return fmt.Errorf("store: revoke: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("%w: agent %q", fault.NotFound, root)
		}
		tree := `(substr(name, 1, ?) = ?`
		args := []any{len(prefix), prefix}
		if includeRoot {
			tree += ` OR name = ?`
			args = append(args, root)
		}
		tree += `)`
		rows, err := tx.query(ctx, `SELECT name FROM agents WHERE status <> ? AND `+tree+` ORDER BY name`, append([]any{string(identity.StatusRevoked)}, args...)...)
		if err != nil {
			return fmt.Errorf("store: revoke: %w", err)
		}
		if agents, err = scanStrings(rows); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE agents SET status = ?, updated_at = ? WHERE `+tree, append([]any{string(identity.StatusRevoked), ts(at)}, args...)...); err != nil {
			return fmt.Errorf("store: revoke agents: %w", err)
		}
		certTree := `agent IN (SELECT name FROM agents WHERE ` + tree + `)`
		rows, err = tx.query(ctx, `SELECT serial FROM certificates WHERE revoked_at IS NULL AND `+certTree+` ORDER BY serial`, args...)
		if err != nil {
			return fmt.Errorf("store: revoke certificates: %w", err)
		}
		if serials, err = scanStrings(rows); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE certificates SET revoked_at = ?, revoked_reason = ? WHERE revoked_at IS NULL AND `+certTree,
			append([]any{ts(at), reason}, args...)...); err != nil {
			return fmt.Errorf("store: revoke certificates: %w", err)
		}
		return nil
	})
	return agents, serials, err
}

// RevokeCertsByID revokes the certificates of one SPIFFE ID.
func (s *DB) RevokeCertsByID(ctx context.Context, id string, at time.Time, reason string) ([]string, error) {
	var serials []string
	err := s.tx(ctx, func(tx *Tx) error {
		rows, err := tx.query(ctx, `SELECT serial FROM certificates WHERE spiffe_id = ? AND revoked_at IS NULL ORDER BY serial`, id)
		if err != nil {
			return fmt.Errorf("store: revoke certificates: %w", err)
		}
		if serials, err = scanStrings(rows); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, `UPDATE certificates SET revoked_at = ?, revoked_reason = ? WHERE spiffe_id = ? AND revoked_at IS NULL`,
			ts(at), reason, id); err != nil {
			return fmt.Errorf("store: revoke certificates: %w", err)
		}
		return nil
	})
	return serials, err
}

// Meta returns a value from the key/value metadata table, or "" if unset.
func (s *DB) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.queryRow(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: read meta %s: %w", key, err)
	}
	return v, nil
}

// SetMetaOnce sets key to value if unset and returns the value in force, so
// two servers that start together agree on the first one written.
func (s *DB) SetMetaOnce(ctx context.Context, key, value string) (string, error) {
	_, err := s.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value)
	if err != nil {
		return "", fmt.Errorf("store: write meta %s: %w", key, err)
	}
	return s.Meta(ctx, key)
}
