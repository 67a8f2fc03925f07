package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var _ policy.Store = (*DB)(nil)

// lockPolicyState locks the policy_state row for the rest of tx, which
// orders every policy change (and version numbering) on PostgreSQL; SQLite's
// immediate transactions already serialize writers.
func (s *DB) lockPolicyState(ctx context.Context, tx *Tx) (policy.State, error) {
	lock := ""
	if s.dialect == postgresDialect {
		lock = " FOR UPDATE"
	}
	var st policy.State
	err := tx.queryRow(ctx, `SELECT live_version, shadow_version, generation FROM policy_state WHERE id = 1`+lock).
		Scan(&st.Live, &st.Shadow, &st.Generation)
	if err != nil {
		return st, fmt.Errorf("store: read policy state: %w", err)
	}
	return st, nil
}

func writePolicyState(ctx context.Context, tx *Tx, st policy.State) error {
	_, err := tx.exec(ctx, `UPDATE policy_state SET live_version = ?, shadow_version = ?, generation = ? WHERE id = 1`,
		st.Live, st.Shadow, st.Generation)
	if err != nil {
		return fmt.Errorf("store: write policy state: %w", err)
	}
	// Delivered at commit, after the change is visible: every replica's
	// PDP reloads now rather than at its next poll (see PolicyChanges).
	return tx.notify(ctx, policyChannel)
}

// bumpGeneration marks a change every PDP must load.
func (s *DB) bumpGeneration(ctx context.Context, tx *Tx) error {
	st, err := s.lockPolicyState(ctx, tx)
	if err != nil {
		return err
	}
	st.Generation++
	return writePolicyState(ctx, tx, st)
}

// PolicyState returns which versions are in force.
func (s *DB) PolicyState(ctx context.Context) (policy.State, error) {
	var st policy.State
	err := s.queryRow(ctx, `SELECT live_version, shadow_version, generation FROM policy_state WHERE id = 1`).
		Scan(&st.Live, &st.Shadow, &st.Generation)
	if err != nil {
		return st, fmt.Errorf("store: read policy state: %w", err)
	}
	return st, nil
}

// CreatePolicyVersion stores v under the next number and puts it in force.
func (s *DB) CreatePolicyVersion(ctx context.Context, v policy.Version) (int64, error) {
	files, err := json.Marshal(v.Files)
	if err != nil {
		return 0, fmt.Errorf("store: encode policy files: %w", err)
	}
	var n int64
	err = s.tx(ctx, func(tx *Tx) error {
		st, err := s.lockPolicyState(ctx, tx)
		if err != nil {
			return err
		}
		if err := tx.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions`).Scan(&n); err != nil {
			return fmt.Errorf("store: next policy version: %w", err)
		}
		_, err = tx.exec(ctx, `INSERT INTO policy_versions (version, digest, policies, shadow, description, created_at, created_by, files) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			n, v.Digest, v.Policies, policyFlag(v.Shadow), v.Description, ts(v.CreatedAt), v.CreatedBy, files)
		if err != nil {
			return fmt.Errorf("store: insert policy version: %w", err)
		}
		if v.Shadow {
			st.Shadow = n
		} else {
			st.Live = n
		}
		st.Generation++
		return writePolicyState(ctx, tx, st)
	})
	return n, err
}

// UpdatePolicyState changes which versions are in force.
func (s *DB) UpdatePolicyState(ctx context.Context, fn func(policy.State) (policy.State, error)) (policy.State, error) {
	var out policy.State
	err := s.tx(ctx, func(tx *Tx) error {
		st, err := s.lockPolicyState(ctx, tx)
		if err != nil {
			return err
		}
		next, err := fn(st)
		if err != nil {
			return err
		}
		next.Generation = st.Generation + 1
		out = next
		return writePolicyState(ctx, tx, next)
	})
	return out, err
}

const policyVersionCols = `version, digest, policies, shadow, description, created_at, created_by`

func scanPolicyVersion(sc interface{ Scan(...any) error }, extra ...any) (policy.Version, error) {
	var (
		v       policy.Version
		shadow  int64
		created sql.NullInt64
	)
	if err := sc.Scan(append([]any{&v.Number, &v.Digest, &v.Policies, &shadow, &v.Description, &created, &v.CreatedBy}, extra...)...); err != nil {
		return v, err
	}
	v.Shadow, v.CreatedAt = shadow != 0, fromTS(created)
	return v, nil
}

// PolicyVersion returns a version with its files.
func (s *DB) PolicyVersion(ctx context.Context, n int64) (policy.Version, error) {
	var files []byte
	v, err := scanPolicyVersion(s.queryRow(ctx, `SELECT `+policyVersionCols+`, files FROM policy_versions WHERE version = ?`, n), &files)
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("%w: policy version %d", fault.NotFound, n)
	}
	if err != nil {
		return v, fmt.Errorf("store: get policy version: %w", err)
	}
	if err := json.Unmarshal(files, &v.Files); err != nil {
		return v, fmt.Errorf("store: decode policy version %d: %w", n, err)
	}
	return v, nil
}

// ListPolicyVersions lists versions, oldest first, without files.
func (s *DB) ListPolicyVersions(ctx context.Context) ([]policy.Version, error) {
	scan := func(sc rowScanner) (policy.Version, error) { return scanPolicyVersion(sc) }
	return queryList(ctx, s, "list policy versions", scan, `SELECT `+policyVersionCols+` FROM policy_versions ORDER BY version`)
}

// PolicyAgents lists active agents with their roles.
func (s *DB) PolicyAgents(ctx context.Context) ([]policy.AgentRoles, error) {
	rows, err := s.query(ctx, `SELECT a.name, a.spiffe_id, r.role FROM agents a LEFT JOIN agent_roles r ON r.agent = a.name
		WHERE a.status = 'active' ORDER BY a.name, r.role`)
	if err != nil {
		return nil, fmt.Errorf("store: list agents for policy: %w", err)
	}
	defer rows.Close()
	var out []policy.AgentRoles
	for rows.Next() {
		var (
			name, id string
			role     sql.NullString
		)
		if err := rows.Scan(&name, &id, &role); err != nil {
			return nil, fmt.Errorf("store: list agents for policy: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].Name != name {
			out = append(out, policy.AgentRoles{Name: name, SPIFFEID: id})
		}
		if role.Valid {
			last := &out[len(out)-1]
			last.Roles = append(last.Roles, role.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list agents for policy: %w", err)
	}
	return out, nil
}

// AddAgentRole assigns a role.
func (s *DB) AddAgentRole(ctx context.Context, a policy.RoleAssignment) error {
	return s.tx(ctx, func(tx *Tx) error {
		var one int
		err := tx.queryRow(ctx, `SELECT 1 FROM agents WHERE name = ?`, a.Agent).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: agent %q", fault.NotFound, a.Agent)
		}
		if err != nil {
			return fmt.Errorf("store: check agent: %w", err)
		}
		_, err = tx.exec(ctx, `INSERT INTO agent_roles (agent, role, created_at, created_by) VALUES (?, ?, ?, ?)`,
			a.Agent, a.Role, ts(a.CreatedAt), a.CreatedBy)
		if isUnique(err) {
			return fmt.Errorf("%w: agent %q already has role %q", fault.Conflict, a.Agent, a.Role)
		}
		if err != nil {
			return fmt.Errorf("store: add role: %w", err)
		}
		return s.bumpGeneration(ctx, tx)
	})
}

// RemoveAgentRole takes a role away.
func (s *DB) RemoveAgentRole(ctx context.Context, agent, role string) error {
	return s.tx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `DELETE FROM agent_roles WHERE agent = ? AND role = ?`, agent, role)
		if err != nil {
			return fmt.Errorf("store: remove role: %w", err)
		}
		if err := oneRow(res, fmt.Sprintf("agent %q does not have role %q", agent, role)); err != nil {
			return err
		}
		return s.bumpGeneration(ctx, tx)
	})
}

// ListAgentRoles lists assignments; agent "" lists all.
func (s *DB) ListAgentRoles(ctx context.Context, agent string) ([]policy.RoleAssignment, error) {
	q, args := `SELECT agent, role, created_at, created_by FROM agent_roles`, []any{}
	if agent != "" {
		q, args = q+` WHERE agent = ?`, append(args, agent)
	}
	rows, err := s.query(ctx, q+` ORDER BY agent, role`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list roles: %w", err)
	}
	defer rows.Close()
	var out []policy.RoleAssignment
	for rows.Next() {
		var (
			a       policy.RoleAssignment
			created sql.NullInt64
		)
		if err := rows.Scan(&a.Agent, &a.Role, &created, &a.CreatedBy); err != nil {
			return nil, fmt.Errorf("store: list roles: %w", err)
		}
		a.CreatedAt = fromTS(created)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list roles: %w", err)
	}
	return out, nil
}

// ReplaceToolCatalog replaces the catalog.
func (s *DB) ReplaceToolCatalog(ctx context.Context, c policy.Catalog) error {
	return s.tx(ctx, func(tx *Tx) error {
		for _, q := range []string{`DELETE FROM tool_entries`, `DELETE FROM tool_servers`} {
			if _, err := tx.exec(ctx, q); err != nil {
				return fmt.Errorf("store: clear tool catalog: %w", err)
			}
		}
		for _, srv := range c.Servers {
			_, err := tx.exec(ctx, `INSERT INTO tool_servers (name, description, sensitivity, untrusted_output, group_names) VALUES (?, ?, ?, ?, ?)`,
				srv.Name, srv.Description, srv.Sensitivity, policyFlag(policyUntrusted(srv.UntrustedOutput)), policyGroupsJSON(srv.Groups))
			if err != nil {
				return fmt.Errorf("store: insert tool server: %w", err)
			}
			for _, list := range []struct {
				kind    string
				entries []policy.ToolEntry
			}{{"tool", srv.Tools}, {"route", srv.Routes}, {"host", srv.Hosts}} {
				for _, t := range list.entries {
					_, err := tx.exec(ctx, `INSERT INTO tool_entries (server, kind, name, description, sensitivity, untrusted_output, group_names, method, path, path_args, effects) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
						srv.Name, list.kind, t.Name, t.Description, t.Sensitivity, policyFlag(policyUntrusted(t.UntrustedOutput)), policyGroupsJSON(t.Groups), t.Method, t.Path, policyGroupsJSON(t.PathArgs), t.Effects)
					if err != nil {
						return fmt.Errorf("store: insert %s: %w", list.kind, err)
					}
				}
			}
		}
		return s.bumpGeneration(ctx, tx)
	})
}

// ToolCatalog returns the catalog, servers and entries by name.
func (s *DB) ToolCatalog(ctx context.Context) (policy.Catalog, error) {
	var c policy.Catalog
	rows, err := s.query(ctx, `SELECT name, description, sensitivity, untrusted_output, group_names FROM tool_servers ORDER BY name`)
	if err != nil {
		return c, fmt.Errorf("store: read tool catalog: %w", err)
	}
	byName := map[string]int{}
	for rows.Next() {
		var (
			srv    policy.Server
			ut     int64
			groups string
		)
		if err := rows.Scan(&srv.Name, &srv.Description, &srv.Sensitivity, &ut, &groups); err != nil {
			rows.Close()
			return c, fmt.Errorf("store: read tool catalog: %w", err)
		}
		srv.UntrustedOutput = policyBoolPtr(ut != 0)
		if srv.Groups, err = policyParseGroups(groups); err != nil {
			rows.Close()
			return c, err
		}
		byName[srv.Name] = len(c.Servers)
		c.Servers = append(c.Servers, srv)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("store: read tool catalog: %w", err)
	}
	rows, err = s.query(ctx, `SELECT server, kind, name, description, sensitivity, untrusted_output, group_names, method, path, path_args, effects FROM tool_entries ORDER BY server, kind, name`)
	if err != nil {
		return c, fmt.Errorf("store: read tool catalog: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			server, kind, groups, pathArgs string
			t                              policy.ToolEntry
			ut                             int64
		)
		if err := rows.Scan(&server, &kind, &t.Name, &t.Description, &t.Sensitivity, &ut, &groups, &t.Method, &t.Path, &pathArgs, &t.Effects); err != nil {
			return c, fmt.Errorf("store: read tool catalog: %w", err)
		}
		if t.PathArgs, err = policyParseGroups(pathArgs); err != nil {
			return c, err
		}
		t.UntrustedOutput = policyBoolPtr(ut != 0)
		if t.Groups, err = policyParseGroups(groups); err != nil {
			return c, err
		}
		i, ok := byName[server]
		if !ok {
			return c, fmt.Errorf("store: tool %s/%s has no server", server, t.Name)
		}
		switch kind {
		case "route":
			c.Servers[i].Routes = append(c.Servers[i].Routes, t)
		case "host":
			c.Servers[i].Hosts = append(c.Servers[i].Hosts, t)
		default:
			c.Servers[i].Tools = append(c.Servers[i].Tools, t)
		}
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("store: read tool catalog: %w", err)
	}
	return c, nil
}

// RecordShadow stores shadow differences and adds to the counts.
func (s *DB) RecordShadow(ctx context.Context, diffs []policy.ShadowDiff, stats []policy.ShadowStats) error {
	return s.tx(ctx, func(tx *Tx) error {
		for _, d := range diffs {
			lr, _ := json.Marshal(policyStrings(d.LiveReasons))
			sr, _ := json.Marshal(policyStrings(d.ShadowReasons))
			_, err := tx.exec(ctx, `INSERT INTO policy_shadow_diffs (decision_id, shadow_version, live_version, time, principal, action, resource, live_allow, shadow_allow, live_reasons, shadow_reasons)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (decision_id) DO NOTHING`,
				d.DecisionID, d.ShadowVersion, d.LiveVersion, ts(d.Time), d.Principal, d.Action, d.Resource,
				policyFlag(d.LiveAllowed), policyFlag(d.ShadowAllowed), string(lr), string(sr))
			if err != nil {
				return fmt.Errorf("store: record shadow difference: %w", err)
			}
		}
		for _, st := range stats {
			_, err := tx.exec(ctx, `INSERT INTO policy_shadow_stats (shadow_version, evaluated, unrecorded) VALUES (?, ?, ?)
				ON CONFLICT (shadow_version) DO UPDATE SET evaluated = policy_shadow_stats.evaluated + excluded.evaluated,
				unrecorded = policy_shadow_stats.unrecorded + excluded.unrecorded`, st.Version, st.Evaluated, st.Unrecorded)
			if err != nil {
				return fmt.Errorf("store: record shadow counts: %w", err)
			}
		}
		return nil
	})
}

// ShadowDiffs returns a version's differences, newest first.
func (s *DB) ShadowDiffs(ctx context.Context, version int64, limit int) ([]policy.ShadowDiff, error) {
	q := `SELECT decision_id, shadow_version, live_version, time, principal, action, resource, live_allow, shadow_allow, live_reasons, shadow_reasons
		FROM policy_shadow_diffs WHERE shadow_version = ? ORDER BY time DESC, decision_id DESC`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := s.query(ctx, q, version)
	if err != nil {
		return nil, fmt.Errorf("store: read shadow differences: %w", err)
	}
	defer rows.Close()
	var out []policy.ShadowDiff
	for rows.Next() {
		var (
			d                 policy.ShadowDiff
			at                sql.NullInt64
			live, shadow      int64
			lReasons, sReason string
		)
		if err := rows.Scan(&d.DecisionID, &d.ShadowVersion, &d.LiveVersion, &at, &d.Principal, &d.Action, &d.Resource,
			&live, &shadow, &lReasons, &sReason); err != nil {
			return nil, fmt.Errorf("store: read shadow differences: %w", err)
		}
		d.Time, d.LiveAllowed, d.ShadowAllowed = fromTS(at), live != 0, shadow != 0
		if err := json.Unmarshal([]byte(lReasons), &d.LiveReasons); err != nil {
			return nil, fmt.Errorf("store: decode shadow reasons: %w", err)
		}
		if err := json.Unmarshal([]byte(sReason), &d.ShadowReasons); err != nil {
			return nil, fmt.Errorf("store: decode shadow reasons: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read shadow differences: %w", err)
	}
	return out, nil
}

// ShadowSummary counts a shadow version's evaluations and flips.
func (s *DB) ShadowSummary(ctx context.Context, version int64) (policy.ShadowSummary, error) {
	sum := policy.ShadowSummary{ShadowStats: policy.ShadowStats{Version: version}}
	err := s.queryRow(ctx, `SELECT evaluated, unrecorded FROM policy_shadow_stats WHERE shadow_version = ?`, version).
		Scan(&sum.Evaluated, &sum.Unrecorded)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return sum, fmt.Errorf("store: read shadow counts: %w", err)
	}
	err = s.queryRow(ctx, `SELECT COALESCE(SUM(live_allow), 0), COALESCE(SUM(shadow_allow), 0) FROM policy_shadow_diffs WHERE shadow_version = ?`, version).
		Scan(&sum.AllowToDeny, &sum.DenyToAllow)
	if err != nil {
		return sum, fmt.Errorf("store: count shadow differences: %w", err)
	}
	return sum, nil
}

func policyFlag(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func policyBoolPtr(b bool) *bool { return &b }

// untrusted reads an untrusted_output flag; unset counts as untrusted.
func policyUntrusted(b *bool) bool { return b == nil || *b }

func policyGroupsJSON(g []string) string {
	b, _ := json.Marshal(policyStrings(g))
	return string(b)
}

func policyParseGroups(s string) ([]string, error) {
	var g []string
	if err := json.Unmarshal([]byte(s), &g); err != nil {
		return nil, fmt.Errorf("store: decode groups %q: %w", strings.TrimSpace(s), err)
	}
	if len(g) == 0 {
		return nil, nil
	}
	return g, nil
}

func policyStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
