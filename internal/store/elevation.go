package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var (
	_ elevation.Store      = (*DB)(nil)
	_ policy.ManagedSource = (*DB)(nil)
)

// lockRow is the row-lock suffix of a SELECT inside a transaction: SQLite's
// immediate transactions already hold the write lock.
func (s *DB) lockRow() string {
	if s.dialect == postgresDialect {
		return " FOR UPDATE"
	}
	return ""
}

// PutManifest stores the next version of a manifest and makes its policies
// the manifest's managed set, bumping the policy generation.
func (s *DB) PutManifest(ctx context.Context, m elevation.StoredManifest) error {
	spec, err := json.Marshal(m.Manifest)
	if err != nil {
		return fmt.Errorf("store: encode manifest: %w", err)
	}
	return s.tx(ctx, func(tx *Tx) error {
		// The policy state's lock orders manifest versions too.
		if err := s.bumpGeneration(ctx, tx); err != nil {
			return err
		}
		var latest int64
		if err := tx.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM manifests WHERE name = ?`, m.Name).Scan(&latest); err != nil {
			return fmt.Errorf("store: latest manifest version: %w", err)
		}
		if latest != m.Version-1 {
			return fmt.Errorf("%w: manifest %s is at version %d now; apply it again", fault.Conflict, m.Name, latest)
		}
		_, err := tx.exec(ctx, `INSERT INTO manifests (name, version, spec, source, policies, digest, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			m.Name, m.Version, string(spec), m.Source, m.Policies, m.Digest, ts(m.CreatedAt), m.CreatedBy)
		if isUnique(err) {
			return fmt.Errorf("%w: manifest %s version %d exists", fault.Conflict, m.Name, m.Version)
		}
		if err != nil {
			return fmt.Errorf("store: insert manifest: %w", err)
		}
		return nil
	})
}

const manifestCols = `name, version, spec, source, policies, digest, created_at, created_by`

// latestManifests selects the latest version of each manifest.
const latestManifests = `SELECT ` + manifestCols + ` FROM manifests m WHERE version = (SELECT MAX(version) FROM manifests WHERE name = m.name)`

func scanManifest(sc interface{ Scan(...any) error }) (elevation.StoredManifest, error) {
	var (
		m       elevation.StoredManifest
		spec    string
		created sql.NullInt64
	)
	if err := sc.Scan(&m.Name, &m.Version, &spec, &m.Source, &m.Policies, &m.Digest, &created, &m.CreatedBy); err != nil {
		return m, err
	}
	name := m.Name
	if err := json.Unmarshal([]byte(spec), &m.Manifest); err != nil {
		return m, fmt.Errorf("store: decode manifest %s: %w", name, err)
	}
	m.Name, m.CreatedAt = name, fromTS(created)
	return m, nil
}

// GetManifest returns a manifest's latest version.
func (s *DB) GetManifest(ctx context.Context, name string) (elevation.StoredManifest, error) {
	m, err := scanManifest(s.queryRow(ctx, `SELECT `+manifestCols+` FROM manifests WHERE name = ? ORDER BY version DESC LIMIT 1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("%w: manifest %q", fault.NotFound, name)
	}
	if err != nil {
		return m, fmt.Errorf("store: get manifest: %w", err)
	}
	return m, nil
}

// ListManifests returns every manifest's latest version, by name.
func (s *DB) ListManifests(ctx context.Context) ([]elevation.StoredManifest, error) {
	return queryList(ctx, s, "list manifests", scanManifest, latestManifests+` ORDER BY name`)
}

// ManagedSets returns the policy set compiled from each manifest's latest
// version.
func (s *DB) ManagedSets(ctx context.Context) ([]policy.ManagedSet, error) {
	rows, err := s.query(ctx, `SELECT name, version, policies, digest FROM manifests m WHERE version = (SELECT MAX(version) FROM manifests WHERE name = m.name) ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: managed policy sets: %w", err)
	}
	defer rows.Close()
	var out []policy.ManagedSet
	for rows.Next() {
		var (
			m     policy.ManagedSet
			text  string
			digst string
		)
		if err := rows.Scan(&m.Name, &m.Version, &text, &digst); err != nil {
			return nil, fmt.Errorf("store: managed policy sets: %w", err)
		}
		m.Files = []policy.File{{Name: m.Name + policy.PolicyExt, Content: text}}
		m.Digest = digst
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: managed policy sets: %w", err)
	}
	return out, nil
}

const taskCols = `id, agent, manifest, manifest_version, description, status, tainted, tainted_at, taint_source, opened_at, deadline, ended_at, ended_by, end_reason`

func scanTask(sc interface{ Scan(...any) error }) (elevation.Task, error) {
	var (
		t                                  elevation.Task
		tainted                            int64
		taintedAt, opened, deadline, ended sql.NullInt64
		status                             string
	)
	if err := sc.Scan(&t.ID, &t.Agent, &t.Manifest, &t.ManifestVersion, &t.Description, &status, &tainted, &taintedAt,
		&t.TaintSource, &opened, &deadline, &ended, &t.EndedBy, &t.EndReason); err != nil {
		return t, err
	}
	t.Status, t.Tainted = elevation.TaskStatus(status), tainted != 0
	t.TaintedAt, t.OpenedAt, t.Deadline, t.EndedAt = fromTS(taintedAt), fromTS(opened), fromTS(deadline), fromTS(ended)
	return t, nil
}

// CreateTask stores a new task.
func (s *DB) CreateTask(ctx context.Context, t elevation.Task) error {
	_, err := s.exec(ctx, `INSERT INTO tasks (`+taskCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Agent, t.Manifest, t.ManifestVersion, t.Description, string(t.Status), flag(t.Tainted), ts(t.TaintedAt),
		t.TaintSource, ts(t.OpenedAt), ts(t.Deadline), ts(t.EndedAt), t.EndedBy, t.EndReason)
	if isUnique(err) {
		return fmt.Errorf("%w: task %s exists", fault.Conflict, t.ID)
	}
	if err != nil {
		return fmt.Errorf("store: create task: %w", err)
	}
	return nil
}

func flag(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// GetTask returns a task.
func (s *DB) GetTask(ctx context.Context, id string) (elevation.Task, error) {
	t, err := scanTask(s.queryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("%w: task %s", fault.NotFound, id)
	}
	if err != nil {
		return t, fmt.Errorf("store: get task: %w", err)
	}
	return t, nil
}

// listLimit bounds list queries.
const listLimit = 1000

// ListTasks lists tasks, newest first.
func (s *DB) ListTasks(ctx context.Context, openOnly bool) ([]elevation.Task, error) {
	q := `SELECT ` + taskCols + ` FROM tasks`
	if openOnly {
		q += ` WHERE status = 'open'`
	}
	return s.tasks(ctx, q+fmt.Sprintf(` ORDER BY opened_at DESC, id LIMIT %d`, listLimit))
}

func (s *DB) tasks(ctx context.Context, q string, args ...any) ([]elevation.Task, error) {
	return queryList(ctx, s, "list tasks", scanTask, q, args...)
}

// TasksDue lists open tasks past their deadline.
func (s *DB) TasksDue(ctx context.Context, now time.Time) ([]elevation.Task, error) {
	return s.tasks(ctx, `SELECT `+taskCols+` FROM tasks WHERE status = 'open' AND deadline <= ? ORDER BY deadline LIMIT ?`, ts(now), listLimit)
}

// live are the elevation states a task's end ends.
const live = `('pending', 'active')`

// EndTask closes an open task and ends its pending and active elevations,
// in one transaction.
func (s *DB) EndTask(ctx context.Context, id string, status elevation.TaskStatus, at time.Time, by, reason string) ([]elevation.Elevation, error) {
	var ended []elevation.Elevation
	err := s.tx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `UPDATE tasks SET status = ?, ended_at = ?, ended_by = ?, end_reason = ? WHERE id = ? AND status = 'open'`,
			string(status), ts(at), by, reason, id)
		if err != nil {
			return fmt.Errorf("store: end task: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("store: end task: %w", err)
		} else if n == 0 {
			var one int
			if err := tx.queryRow(ctx, `SELECT 1 FROM tasks WHERE id = ?`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: task %s", fault.NotFound, id)
			}
			return fmt.Errorf("%w: task %s is not open", fault.Conflict, id)
		}
		rows, err := tx.query(ctx, `SELECT `+elevationCols+` FROM elevations WHERE task = ? AND status IN `+live+` ORDER BY requested_at`, id)
		if err != nil {
			return fmt.Errorf("store: end task: %w", err)
		}
		for rows.Next() {
			e, err := scanElevation(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("store: end task: %w", err)
			}
			ended = append(ended, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: end task: %w", err)
		}
		_, err = tx.exec(ctx, `UPDATE elevations SET status = 'ended', ended_at = ?, ended_by = ?, end_reason = ? WHERE task = ? AND status IN `+live,
			ts(at), by, "task "+string(status), id)
		if err != nil {
			return fmt.Errorf("store: end task's elevations: %w", err)
		}
		return nil
	})
	return ended, err
}

// TaintTask marks an open, untainted task tainted.
func (s *DB) TaintTask(ctx context.Context, id string, at time.Time, source string) (bool, error) {
	res, err := s.exec(ctx, `UPDATE tasks SET tainted = 1, tainted_at = ?, taint_source = ? WHERE id = ? AND status = 'open' AND tainted = 0`,
		ts(at), source, id)
	if err != nil {
		return false, fmt.Errorf("store: taint task: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: taint task: %w", err)
	}
	return n == 1, nil
}

const elevationCols = `id, task, agent, manifest, trigger_name, justification, approval, sensitivity, tainted, status, requested_at, request_expires_at, granted_at, expires_at, max_uses, uses, ended_at, ended_by, end_reason`

func scanElevation(sc interface{ Scan(...any) error }) (elevation.Elevation, error) {
	var (
		e                                          elevation.Elevation
		tainted                                    int64
		status                                     string
		requested, reqExp, granted, expires, ended sql.NullInt64
	)
	if err := sc.Scan(&e.ID, &e.Task, &e.Agent, &e.Manifest, &e.Trigger, &e.Justification, &e.Approval, &e.Sensitivity, &tainted,
		&status, &requested, &reqExp, &granted, &expires, &e.MaxUses, &e.Uses, &ended, &e.EndedBy, &e.EndReason); err != nil {
		return e, err
	}
	e.Tainted, e.Status = tainted != 0, elevation.Status(status)
	e.RequestedAt, e.RequestExpiresAt, e.GrantedAt = fromTS(requested), fromTS(reqExp), fromTS(granted)
	e.ExpiresAt, e.EndedAt = fromTS(expires), fromTS(ended)
	return e, nil
}

// CreateElevation stores a pending elevation of an open task.
func (s *DB) CreateElevation(ctx context.Context, e elevation.Elevation) error {
	return s.tx(ctx, func(tx *Tx) error {
		// Lock the task so that it cannot end between this check and the
		// insert (its end would miss the new elevation).
		var status string
		var deadline sql.NullInt64
		err := tx.queryRow(ctx, `SELECT status, deadline FROM tasks WHERE id = ?`+s.lockRow(), e.Task).Scan(&status, &deadline)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: task %s", fault.NotFound, e.Task)
		}
		if err != nil {
			return fmt.Errorf("store: create elevation: %w", err)
		}
		if status != string(elevation.TaskOpen) || !e.RequestedAt.Before(fromTS(deadline)) {
			return fmt.Errorf("%w: task %s is not open", fault.Conflict, e.Task)
		}
		_, err = tx.exec(ctx, `INSERT INTO elevations (`+elevationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.ID, e.Task, e.Agent, e.Manifest, e.Trigger, e.Justification, e.Approval, e.Sensitivity, flag(e.Tainted), string(e.Status),
			ts(e.RequestedAt), ts(e.RequestExpiresAt), ts(e.GrantedAt), ts(e.ExpiresAt), e.MaxUses, e.Uses, ts(e.EndedAt), e.EndedBy, e.EndReason)
		if isUnique(err) {
			return fmt.Errorf("%w: elevation %s exists", fault.Conflict, e.ID)
		}
		if err != nil {
			return fmt.Errorf("store: create elevation: %w", err)
		}
		return nil
	})
}

// GetElevation returns an elevation with its approvals.
func (s *DB) GetElevation(ctx context.Context, id string) (elevation.Elevation, error) {
	e, err := scanElevation(s.queryRow(ctx, `SELECT `+elevationCols+` FROM elevations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("%w: elevation %s", fault.NotFound, id)
	}
	if err != nil {
		return e, fmt.Errorf("store: get elevation: %w", err)
	}
	list := []elevation.Elevation{e}
	if err := s.loadApprovals(ctx, list); err != nil {
		return e, err
	}
	return list[0], nil
}

// ListElevations lists elevations, newest first.
func (s *DB) ListElevations(ctx context.Context, f elevation.Filter) ([]elevation.Elevation, error) {
	var (
		where []string
		args  []any
	)
	if f.Task != "" {
		where, args = append(where, "task = ?"), append(args, f.Task)
	}
	if len(f.Statuses) > 0 {
		marks := make([]string, len(f.Statuses))
		for i, st := range f.Statuses {
			marks[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "status IN ("+strings.Join(marks, ", ")+")")
	}
	q := `SELECT ` + elevationCols + ` FROM elevations`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	out, err := s.elevations(ctx, q+fmt.Sprintf(` ORDER BY requested_at DESC, id LIMIT %d`, listLimit), args...)
	if err != nil {
		return nil, err
	}
	return out, s.loadApprovals(ctx, out)
}

func (s *DB) elevations(ctx context.Context, q string, args ...any) ([]elevation.Elevation, error) {
	return queryList(ctx, s, "list elevations", scanElevation, q, args...)
}

// loadApprovals fills each elevation's approvals, oldest first.
func (s *DB) loadApprovals(ctx context.Context, es []elevation.Elevation) error {
	if len(es) == 0 {
		return nil
	}
	idx := make(map[string]int, len(es))
	marks := make([]string, len(es))
	args := make([]any, len(es))
	for i, e := range es {
		idx[e.ID], marks[i], args[i] = i, "?", e.ID
	}
	rows, err := s.query(ctx, `SELECT elevation, task, approver, reason, at FROM elevation_approvals WHERE elevation IN (`+strings.Join(marks, ", ")+`) ORDER BY at, approver`, args...)
	if err != nil {
		return fmt.Errorf("store: approvals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			a  elevation.Approval
			at sql.NullInt64
		)
		if err := rows.Scan(&a.Elevation, &a.Task, &a.Approver, &a.Reason, &at); err != nil {
			return fmt.Errorf("store: approvals: %w", err)
		}
		a.At = fromTS(at)
		i := idx[a.Elevation]
		es[i].Approvals = append(es[i].Approvals, a)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: approvals: %w", err)
	}
	return nil
}

// Approve records an approval of a pending elevation of an open task and,
// with grant, puts it in force, in one transaction.
func (s *DB) Approve(ctx context.Context, a elevation.Approval, grant *elevation.Grant) error {
	return s.tx(ctx, func(tx *Tx) error {
		// Task first, then elevation: the order EndTask locks them in.
		var tstatus string
		var deadline sql.NullInt64
		err := tx.queryRow(ctx, `SELECT status, deadline FROM tasks WHERE id = ?`+s.lockRow(), a.Task).Scan(&tstatus, &deadline)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: task %s", fault.NotFound, a.Task)
		}
		if err != nil {
			return fmt.Errorf("store: approve: %w", err)
		}
		if tstatus != string(elevation.TaskOpen) || !a.At.Before(fromTS(deadline)) {
			return fmt.Errorf("%w: task %s is not open", fault.Conflict, a.Task)
		}
		var status string
		var reqExp sql.NullInt64
		err = tx.queryRow(ctx, `SELECT status, request_expires_at FROM elevations WHERE id = ? AND task = ?`+s.lockRow(), a.Elevation, a.Task).Scan(&status, &reqExp)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: elevation %s of task %s", fault.NotFound, a.Elevation, a.Task)
		}
		if err != nil {
			return fmt.Errorf("store: approve: %w", err)
		}
		if status != string(elevation.StatusPending) || !a.At.Before(fromTS(reqExp)) {
			return fmt.Errorf("%w: elevation %s is no longer pending", fault.Conflict, a.Elevation)
		}
		_, err = tx.exec(ctx, `INSERT INTO elevation_approvals (elevation, task, approver, reason, at) VALUES (?, ?, ?, ?, ?)`,
			a.Elevation, a.Task, a.Approver, a.Reason, ts(a.At))
		if isUnique(err) {
			return fmt.Errorf("%w: %s approved elevation %s already", fault.Conflict, a.Approver, a.Elevation)
		}
		if err != nil {
			return fmt.Errorf("store: approve: %w", err)
		}
		if grant == nil {
			return nil
		}
		_, err = tx.exec(ctx, `UPDATE elevations SET status = 'active', granted_at = ?, expires_at = ?, max_uses = ? WHERE id = ?`,
			ts(a.At), ts(grant.ExpiresAt), grant.MaxUses, a.Elevation)
		if err != nil {
			return fmt.Errorf("store: grant: %w", err)
		}
		return nil
	})
}

// SetStatus moves an elevation between states.
func (s *DB) SetStatus(ctx context.Context, id string, from []elevation.Status, to elevation.Status, at time.Time, by, reason string) error {
	if len(from) == 0 {
		return fmt.Errorf("store: set elevation status: no source state")
	}
	marks := make([]string, len(from))
	args := []any{string(to), ts(at), by, reason, id}
	for i, f := range from {
		marks[i] = "?"
		args = append(args, string(f))
	}
	res, err := s.exec(ctx, `UPDATE elevations SET status = ?, ended_at = ?, ended_by = ?, end_reason = ? WHERE id = ? AND status IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return fmt.Errorf("store: set elevation status: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: set elevation status: %w", err)
	}
	if n == 0 {
		if _, err := s.GetElevation(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("%w: elevation %s changed state meanwhile", fault.Conflict, id)
	}
	return nil
}

// UseGrant spends one use of a grant in force whose task is open, in one
// statement, and returns the grant after it.
func (s *DB) UseGrant(ctx context.Context, id string, now time.Time) (elevation.Elevation, error) {
	var e elevation.Elevation
	err := s.tx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `UPDATE elevations SET uses = uses + 1,
			status = CASE WHEN max_uses > 0 AND uses + 1 >= max_uses THEN 'exhausted' ELSE status END,
			ended_at = CASE WHEN max_uses > 0 AND uses + 1 >= max_uses THEN ? ELSE ended_at END,
			end_reason = CASE WHEN max_uses > 0 AND uses + 1 >= max_uses THEN 'every use spent' ELSE end_reason END
			WHERE id = ? AND status = 'active' AND expires_at > ? AND (max_uses = 0 OR uses < max_uses)
			AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = elevations.task AND t.status = 'open' AND t.deadline > ?)`,
			ts(now), id, ts(now), ts(now))
		if err != nil {
			return fmt.Errorf("store: use grant: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("store: use grant: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("%w: grant %s is not in force", fault.Conflict, id)
		}
		e, err = scanElevation(tx.queryRow(ctx, `SELECT `+elevationCols+` FROM elevations WHERE id = ?`, id))
		if err != nil {
			return fmt.Errorf("store: use grant: %w", err)
		}
		return nil
	})
	return e, err
}

// ElevationsDue lists lapsed requests and expired grants.
func (s *DB) ElevationsDue(ctx context.Context, now time.Time) ([]elevation.Elevation, error) {
	return s.elevations(ctx, `SELECT `+elevationCols+` FROM elevations
		WHERE (status = 'pending' AND request_expires_at <= ?) OR (status = 'active' AND expires_at <= ?)
		ORDER BY requested_at LIMIT ?`, ts(now), ts(now), listLimit)
}

// StandingGrants counts grants in force whose task is not open.
func (s *DB) StandingGrants(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.queryRow(ctx, `SELECT COUNT(*) FROM elevations e JOIN tasks t ON t.id = e.task
		WHERE e.status = 'active' AND e.expires_at > ? AND (e.max_uses = 0 OR e.uses < e.max_uses)
		AND NOT (t.status = 'open' AND t.deadline > ?)`, ts(now), ts(now)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: count standing grants: %w", err)
	}
	return n, nil
}

// ApprovalPolicy returns the latest approval policy set.
func (s *DB) ApprovalPolicy(ctx context.Context) (elevation.ApprovalPolicySet, error) {
	var (
		p       elevation.ApprovalPolicySet
		files   []byte
		created sql.NullInt64
	)
	err := s.queryRow(ctx, `SELECT version, digest, files, created_at, created_by FROM approval_policies ORDER BY version DESC LIMIT 1`).
		Scan(&p.Version, &p.Digest, &files, &created, &p.CreatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%w: no approval policy stored", fault.NotFound)
	}
	if err != nil {
		return p, fmt.Errorf("store: approval policy: %w", err)
	}
	if err := json.Unmarshal(files, &p.Files); err != nil {
		return p, fmt.Errorf("store: decode approval policy %d: %w", p.Version, err)
	}
	p.CreatedAt = fromTS(created)
	return p, nil
}

// PutApprovalPolicy stores the next version of the approval policy set.
func (s *DB) PutApprovalPolicy(ctx context.Context, p elevation.ApprovalPolicySet) (int64, error) {
	files, err := json.Marshal(p.Files)
	if err != nil {
		return 0, fmt.Errorf("store: encode approval policy: %w", err)
	}
	var n int64
	err = s.tx(ctx, func(tx *Tx) error {
		if err := tx.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM approval_policies`).Scan(&n); err != nil {
			return fmt.Errorf("store: next approval policy version: %w", err)
		}
		_, err := tx.exec(ctx, `INSERT INTO approval_policies (version, digest, files, created_at, created_by) VALUES (?, ?, ?, ?, ?)`,
			n, p.Digest, files, ts(p.CreatedAt), p.CreatedBy)
		if isUnique(err) {
			return fmt.Errorf("%w: the approval policy changed meanwhile; apply again", fault.Conflict)
		}
		if err != nil {
			return fmt.Errorf("store: insert approval policy: %w", err)
		}
		return nil
	})
	return n, err
}
