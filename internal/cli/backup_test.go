package cli_test

import (
	"bytes"
	"context"
	"database/sql"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // dropping the PostgreSQL schema

	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// A backup taken while the control plane runs brings everything back on a
// new host that kept only master.key: the agents, the secrets, the same CA
// and a log that verifies.
func TestBackupRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn, _ := b.DSN(t)
			env := testenv.Start(t, testenv.WithStore(dsn))
			if _, err := env.Operator.CreateAgent(ctx, "alpha", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := env.Operator.SetSecret(ctx, "files-token", []byte("v1")); err != nil {
				t.Fatal(err)
			}
			bundle := env.Server.BundlePEM()
			backup := filepath.Join(t.TempDir(), "bulkhead.backup")
			storeFlag := []string{"--store", dsn}
			if b.Name == "sqlite" {
				storeFlag = nil // the embedded store is found in the data directory
			}
			cli := func(dir string, args ...string) string {
				t.Helper()
				code, out, errs := run(t, nil, append(append([]string{"--data-dir", dir}, storeFlag...), args...)...)
				if code != 0 {
					t.Fatalf("bulkhead %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
				}
				return out
			}
			if out := cli(env.DataDir, "backup", "--out", backup); !strings.Contains(out, "master.key") {
				t.Fatalf("backup: %s", out)
			}
			env.Stop()

			// The host is lost; master.key was kept apart.
			dir := testenv.JoinDir(t, env.DataDir)
			if b.Name == "postgres" {
				dropSchema(t, dsn)
			}
			cli(dir, "restore", "--from", backup)
			back := testenv.Start(t, testenv.WithStore(dsn), testenv.WithConfig(func(c *server.Config) { c.DataDir = dir }))
			if !bytes.Equal(back.Server.BundlePEM()[:bytes.Index(back.Server.BundlePEM(), []byte("END CERTIFICATE"))], bundle[:bytes.Index(bundle, []byte("END CERTIFICATE"))]) {
				t.Fatal("the restored control plane has another CA root")
			}
			if _, err := back.Operator.GetAgent(ctx, "alpha"); err != nil {
				t.Fatalf("agent after restore: %v", err)
			}
			if s, err := back.Operator.ListSecrets(ctx); err != nil || len(s) != 1 || s[0].Name != "files-token" {
				t.Fatalf("secrets after restore: %+v, %v", s, err)
			}
			if _, err := back.Server.Checkpointer().Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			back.Stop()
			if out := cli(dir, "audit", "verify", "--no-progress"); !strings.HasPrefix(out, "ok:") {
				t.Fatalf("verify after restore: %s", out)
			}
			// A restore never overwrites a store.
			if code, _, errs := run(t, nil, "--data-dir", dir, "--store", dsn, "restore", "--from", backup); code == 0 {
				t.Fatal("restored over a store")
			} else if b.Name == "sqlite" && !strings.Contains(errs, "exists") {
				t.Fatalf("restore over a store: %s", errs)
			}
		})
	}
}

func dropSchema(t *testing.T, dsn string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	schema := q.Get("search_path")
	q.Del("search_path")
	u.RawQuery = q.Encode()
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
		t.Fatal(err)
	}
}
