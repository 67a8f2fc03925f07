package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Backup writes a consistent copy of the store to path, while it is in use:
// SQLite's VACUUM INTO (a snapshot in one read transaction), or pg_dump's
// custom format for PostgreSQL. Everything a control plane needs but the
// master key is inside: its keys are stored sealed with it.
func (s *DB) Backup(ctx context.Context, dsn, path string) error {
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: backup: %s exists; choose a new file", path)
	}
	if s.dialect == postgresDialect {
		conn, schema, err := libpqURI(dsn)
		if err != nil {
			return err
		}
		args := []string{"--format=custom", "--no-owner", "--file", path}
		if schema != "" {
			args = append(args, "--schema", schema)
		}
		return runPG(ctx, "pg_dump", append(args, "--dbname", conn)...)
	}
	if err := s.syncAudit(ctx); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	if _, err := s.sql.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// Restore puts the backup at from in place of the store named by dsn (as
// Open reads it). The target must hold no control plane data: restoring
// over a live history is refused, never merged.
func Restore(ctx context.Context, dsn, dataDir, from string) error {
	if _, err := os.Stat(from); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// A dump of one schema (search_path) recreates it: the target
		// must not have it yet.
		conn, _, err := libpqURI(dsn)
		if err != nil {
			return err
		}
		return runPG(ctx, "pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", "--dbname", conn, from)
	}
	if dsn != "" && dsn != "sqlite" {
		return fmt.Errorf("store: restore: only the embedded SQLite store or PostgreSQL can be restored (got %q)", redact(dsn))
	}
	path := filepath.Join(dataDir, "bulkhead.db")
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: restore: %s exists; move it away first (restore never overwrites a store)", path)
	}
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	defer src.Close()
	head := make([]byte, 16)
	if _, err := io.ReadFull(src, head); err != nil || !strings.HasPrefix(string(head), "SQLite format 3") {
		return fmt.Errorf("store: restore: %s is not a SQLite backup", from)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	// Streamed (a store can be large), synced, then renamed into place:
	// a restore that stops half-way leaves no store behind.
	tmp := path + ".restoring"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("store: restore: %w", err)
	}
	return os.Rename(tmp, path)
}

// libpqURI turns a pgx DSN into one pg_dump accepts: pgx's search_path
// parameter becomes the schema to dump or restore.
func libpqURI(dsn string) (conn, schema string, err error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", "", fmt.Errorf("store: %s: %w", redact(dsn), err)
	}
	q := u.Query()
	schema = q.Get("search_path")
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return u.String(), schema, nil
}

func runPG(ctx context.Context, tool string, args ...string) error {
	path, err := exec.LookPath(tool)
	if err != nil {
		return fmt.Errorf("store: %s is needed for a PostgreSQL store (install the PostgreSQL client of the server's version): %w", tool, err)
	}
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("store: %s: %w: %s", tool, err, strings.TrimSpace(string(out)))
	}
	return nil
}
