package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are written once for both databases; these tokens stand for the
// few types that differ.
var typeTokens = map[dialect]*strings.Replacer{
	sqliteDialect:   strings.NewReplacer("{{bytes}}", "BLOB"),
	postgresDialect: strings.NewReplacer("{{bytes}}", "BYTEA"),
}

// migrationLockID serializes migrations between PostgreSQL replicas that
// start together.
const migrationLockID = 0x62756c6b // "bulk"

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("store: read migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("store: migration %s is not named NNN_name.sql", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("store: read migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

func (s *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	if _, err := s.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("store: create schema_migrations: %w", err)
	}
	return s.tx(ctx, func(tx *Tx) error {
		if s.dialect == postgresDialect {
			if _, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(?)`, migrationLockID); err != nil {
				return fmt.Errorf("store: lock for migration: %w", err)
			}
		}
		// Apply every migration not yet recorded, not only those above the
		// highest: migrations written in parallel may land out of order.
		applied := map[int]bool{}
		rows, err := tx.query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("store: read schema version: %w", err)
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("store: read schema version: %w", err)
			}
			applied[v] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: read schema version: %w", err)
		}
		for _, m := range ms {
			if applied[m.version] {
				continue
			}
			body := typeTokens[s.dialect].Replace(m.sql)
			for _, stmt := range splitStatements(body) {
				if _, err := tx.exec(ctx, stmt); err != nil {
					return fmt.Errorf("store: migration %s: %w", m.name, err)
				}
			}
			if _, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixMicro()); err != nil {
				return fmt.Errorf("store: record migration %s: %w", m.name, err)
			}
			s.logger.Debug("applied migration", "migration", m.name, "store", s.dialect.String())
		}
		return nil
	})
}

// splitStatements splits a migration on semicolons that end a line. The
// migrations contain no procedural code, so this is enough.
func splitStatements(body string) []string {
	var out []string
	for _, part := range strings.Split(body, ";\n") {
		var lines []string
		for _, l := range strings.Split(part, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				lines = append(lines, l)
			}
		}
		if stmt := strings.TrimSuffix(strings.TrimSpace(strings.Join(lines, "\n")), ";"); stmt != "" {
			out = append(out, stmt)
		}
	}
	return out
}
