// Package store implements every domain's storage interface over one
// database/sql core, with a small dialect seam for the two supported
// databases: SQLite (modernc.org/sqlite, the embedded default) and PostgreSQL
// (pgx). Migrations are embedded and applied at start.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// DB is a migrated database.
type DB struct {
	sql     *sql.DB
	dialect dialect
	logger  *slog.Logger
	queries sync.Map // query text with ? placeholders → dialect text
	// writeMu serializes this process's SQLite write transactions. SQLite
	// allows one writer anyway; queueing here is fair and immediate, where
	// SQLite's busy handler would make waiters sleep and retry.
	writeMu sync.Mutex
	// stmts holds the statements of hot write paths, prepared once (see
	// prepared).
	stmts sync.Map // query text → *sql.Stmt
	// frontier is the audit tree's right edge as of this process's last
	// append (see AppendEvents).
	frontier struct {
		sync.Mutex
		f *audit.Frontier
	}
	// spends group-commits budget spends (see spendAll).
	spends spendQueue
	// journal makes audit appends durable ahead of the database (SQLite;
	// see journal.go); auditHeld says another process holds it, and this
	// one must not append.
	journal   *journal
	auditHeld bool
}

// Option adjusts Open.
type Option func(*options)

type options struct{ auditReader bool }

// AuditReader opens the store for a process that reads the audit log but
// never appends to it, beside a control plane that may be running (backup,
// verify). On SQLite it ingests the audit journal if no control plane
// holds it (one stopped by a crash), and otherwise leaves it to its owner.
func AuditReader() Option { return func(o *options) { o.auditReader = true } }

type dialect int

const (
	sqliteDialect dialect = iota
	postgresDialect
)

func (d dialect) String() string {
	if d == postgresDialect {
		return "postgres"
	}
	return "sqlite"
}

// Open opens the store named by dsn and applies pending migrations.
//
// An empty dsn (or "sqlite") means the embedded default: a SQLite database in
// dataDir, created if needed. "postgres://..." or "postgresql://..." opens
// PostgreSQL with pgx. "sqlite:PATH" opens a SQLite file at PATH.
func Open(ctx context.Context, dsn, dataDir string, logger *slog.Logger, opts ...Option) (*DB, error) {
	var (
		db   *sql.DB
		d    dialect
		path string
		o    options
	)
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case dsn == "" || dsn == "sqlite":
		if dataDir == "" {
			return nil, errors.New("store: a data directory is required for the embedded store")
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("store: create data directory: %w", err)
		}
		var err error
		path = filepath.Join(dataDir, "bulkhead.db")
		db, err = openSQLite(path)
		if err != nil {
			return nil, err
		}
	case strings.HasPrefix(dsn, "sqlite:"):
		var err error
		path = strings.TrimPrefix(dsn, "sqlite:")
		db, err = openSQLite(path)
		if err != nil {
			return nil, err
		}
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		var err error
		db, err = sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("store: open postgres: %w", err)
		}
		db.SetMaxOpenConns(16)
		d = postgresDialect
	default:
		return nil, fmt.Errorf("store: unsupported store %q: want postgres://... or sqlite:PATH (or nothing, for SQLite in the data directory)", redact(dsn))
	}
	s := &DB{sql: db, dialect: d, logger: logger}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", d, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if d == sqliteDialect {
		j, held, err := openJournal(ctx, s, path)
		switch {
		case err != nil:
			db.Close()
			return nil, err
		case held && !o.auditReader:
			db.Close()
			return nil, fmt.Errorf("store: another process appends to this store's audit log (it holds %s%s): stop it first", path, journalSuffix)
		case o.auditReader && j != nil:
			// Recovered; the control plane that starts next owns it.
			if err := j.close(); err != nil {
				db.Close()
				return nil, err
			}
		default:
			s.journal = j
		}
		s.auditHeld = o.auditReader
	}
	return s, nil
}

func openSQLite(path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: create directory for %s: %w", path, err)
		}
	}
	// WAL lets readers run beside the writer; synchronous(FULL) makes a
	// commit durable against power loss, not just a crash, which the audit
	// log's promise needs. _txlock=immediate takes the write lock at BEGIN so
	// that a transaction never fails half-way with a busy snapshot.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	return db, nil
}

// redact hides a password in a connection string used in an error message.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Dialect names the database behind the store: "sqlite" or "postgres".
func (s *DB) Dialect() string { return s.dialect.String() }

// Close ingests the audit journal and closes the database.
func (s *DB) Close() error {
	var err error
	if s.journal != nil {
		err = s.journal.close()
	}
	s.stmts.Range(func(_, v any) bool {
		_ = v.(*sql.Stmt).Close()
		return true
	})
	return errors.Join(err, s.sql.Close())
}

// SQL exposes the underlying handle for tests that tamper with rows
// directly; the audit journal is ingested first, so every acknowledged
// event is in the tables.
func (s *DB) SQL() *sql.DB {
	_ = s.syncAudit(context.Background())
	return s.sql
}

// AuditBacklog is how many acknowledged audit events wait in the journal
// for the database (always 0 without one), with the error that keeps them
// there, if any.
func (s *DB) AuditBacklog() (int, error) {
	if s.journal == nil {
		return 0, nil
	}
	return s.journal.backlog()
}

// syncAudit returns once every acknowledged audit event is in the
// database. Audit reads and every other write call it (see journal.go).
func (s *DB) syncAudit(ctx context.Context) error {
	if s.journal == nil {
		return nil
	}
	if err := s.journal.sync(ctx); err != nil {
		// The audit log is down: a dependency, not the request, failed.
		return fmt.Errorf("%w: %w: %w", fault.Unavailable, audit.ErrUnavailable, err)
	}
	return nil
}

// q rewrites a query written with ? placeholders for the dialect.
func (s *DB) q(query string) string {
	if s.dialect != postgresDialect {
		return query
	}
	if v, ok := s.queries.Load(query); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	inString := false
	for _, r := range query {
		switch {
		case r == '\'':
			inString = !inString
		case r == '?' && !inString:
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	out := b.String()
	s.queries.Store(query, out)
	return out
}

func (s *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := s.syncAudit(ctx); err != nil {
		return nil, err
	}
	return s.sql.ExecContext(ctx, s.q(query), args...)
}

func (s *DB) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.sql.QueryContext(ctx, s.q(query), args...)
}

func (s *DB) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return s.sql.QueryRowContext(ctx, s.q(query), args...)
}

// tx runs fn in a transaction, committing if fn returns nil. Acknowledged
// audit events are committed first: no transaction commits an effect
// before its record.
func (s *DB) tx(ctx context.Context, fn func(*Tx) error) error {
	if err := s.syncAudit(ctx); err != nil {
		return err
	}
	return s.rawTx(ctx, fn)
}

// rawTx is tx without the audit journal's catch-up: for the journal's
// own ingest, and for budget counters (see SpendBudgetAs).
func (s *DB) rawTx(ctx context.Context, fn func(*Tx) error) error {
	if s.dialect == sqliteDialect {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	t, err := s.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	if err := fn(&Tx{tx: t, db: s}); err != nil {
		_ = t.Rollback()
		return err
	}
	if err := t.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// Tx is a transaction with the store's placeholder rewriting.
type Tx struct {
	tx *sql.Tx
	db *DB
}

func (t *Tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.db.q(query), args...)
}

// prepared returns query prepared once for the DB's lifetime (database/sql
// then prepares it once per connection). It is for the few fixed statements
// on hot write paths: on SQLite parsing a statement costs more than running
// it, and an audit commit runs several.
func (s *DB) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	if v, ok := s.stmts.Load(query); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := s.sql.PrepareContext(ctx, s.q(query))
	if err != nil {
		return nil, err
	}
	if v, loaded := s.stmts.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// stmt returns a prepared statement (see DB.prepared) for use in t.
func (t *Tx) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	st, err := t.db.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return t.tx.StmtContext(ctx, st), nil
}

// execPrepared is exec with a prepared statement.
func (t *Tx) execPrepared(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// queryRowPrepared is queryRow with a prepared statement.
func (t *Tx) queryRowPrepared(ctx context.Context, query string, args ...any) (*sql.Row, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryRowContext(ctx, args...), nil
}

func (t *Tx) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.db.q(query), args...)
}

func (t *Tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.db.q(query), args...)
}

// isUnique reports whether err is a unique-constraint violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
}

// Times are stored as Unix microseconds: both databases compare them exactly
// and the zero time is stored as NULL.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromTS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

// rowScanner is what the scan functions read: *sql.Row or *sql.Rows.
type rowScanner = interface{ Scan(...any) error }

// queryList runs a query and scans every row with scan; what names the
// operation in errors.
func queryList[T any](ctx context.Context, s *DB, what string, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := s.query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}
