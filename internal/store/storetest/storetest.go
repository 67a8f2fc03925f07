// Package storetest opens real stores for tests: SQLite in a temporary
// directory, and PostgreSQL in a fresh schema of the machine's server.
//
// PostgreSQL is found at BULKHEAD_TEST_POSTGRES (default
// postgres://postgres@127.0.0.1:5432/test). When it is unreachable the
// PostgreSQL variants skip with a message, except under CI=true, where a
// missing PostgreSQL fails the run: CI must never pass by skipping.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for schema set-up

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// DefaultPostgres is the machine's PostgreSQL (trust auth, database test).
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Backend opens a fresh, empty store.
type Backend struct {
	Name string
	// DSN returns a connection string for a fresh store and the data
	// directory to pass with it.
	DSN func(t testing.TB) (dsn, dataDir string)
}

// Open opens a fresh store of this backend, closed when the test ends.
func (b Backend) Open(t testing.TB) *store.DB {
	t.Helper()
	dsn, dir := b.DSN(t)
	db, err := store.Open(context.Background(), dsn, dir, Logger(t))
	if err != nil {
		t.Fatalf("open %s store: %v", b.Name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Backends returns SQLite and PostgreSQL. Run each test body under
// t.Run(b.Name, ...).
func Backends() []Backend { return []Backend{SQLite, Postgres} }

// The two backends.
var (
	SQLite   = Backend{Name: "sqlite", DSN: func(t testing.TB) (string, string) { return "", t.TempDir() }}
	Postgres = Backend{Name: "postgres", DSN: func(t testing.TB) (string, string) { return PostgresDSN(t), t.TempDir() }}
)

// PostgresDSN creates a schema for this test and returns a DSN whose
// search_path selects it. The schema is dropped when the test ends.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv("BULKHEAD_TEST_POSTGRES")
	if base == "" {
		base = DefaultPostgres
	}
	db, err := sql.Open("pgx", base)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.PingContext(ctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required under CI=true but unreachable at %s: %v", redacted(base), err)
		}
		t.Skipf("PostgreSQL unreachable at %s (set BULKHEAD_TEST_POSTGRES): %v", redacted(base), err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "bh_test_" + hex.EncodeToString(b[:])
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		db.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		_, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		db.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", redacted(base), err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func redacted(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparseable DSN)"
	}
	return u.Redacted()
}

// Logger returns a logger that discards output unless -v is given.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
