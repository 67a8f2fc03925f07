package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// A control plane whose store was lost (an emptied SQLite file, a wrong
// --store) refuses to start a new history under its old CA and audit key,
// unless --init says so.
func TestAnEmptyStoreUnderUsedKeysIsRefused(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn, _ := b.DSN(t)
			env := testenv.Start(t, testenv.WithStore(dsn))
			env.Stop()
			cfg := server.Config{DataDir: env.DataDir, Listen: "127.0.0.1:0", TrustDomain: env.Server.TrustDomain()}
			if b.Name == "sqlite" {
				for _, f := range []string{"bulkhead.db", "bulkhead.db-wal", "bulkhead.db-shm"} {
					_ = os.Remove(filepath.Join(env.DataDir, f))
				}
			} else {
				cfg.Store, _ = b.DSN(t) // another, empty database
			}
			_, err := server.New(ctx, cfg, clock.Real{}, storetest.Logger(t))
			if err == nil || !strings.Contains(err.Error(), "is empty, but") || !strings.Contains(err.Error(), "--init") {
				t.Fatalf("start on an empty store: %v", err)
			}
			cfg.Init = true
			srv, err := server.New(ctx, cfg, clock.Real{}, storetest.Logger(t))
			if err != nil {
				t.Fatalf("start with --init: %v", err)
			}
			srv.Close()
		})
	}
}

// Two control planes never share a data directory.
func TestASecondServeOnOneDataDirIsRefused(t *testing.T) {
	env := testenv.Start(t)
	cfg := server.Config{DataDir: env.DataDir, Listen: "127.0.0.1:0", TrustDomain: env.Server.TrustDomain()}
	_, err := server.New(context.Background(), cfg, clock.Real{}, storetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "another control plane is using") {
		t.Fatalf("second serve on one data directory: %v", err)
	}
	// The first is unaffected, and once it stops the directory is free.
	if _, err := env.Operator.ListAgents(context.Background()); err != nil {
		t.Fatal(err)
	}
	env.Stop()
	srv, err := server.New(context.Background(), cfg, clock.Real{}, storetest.Logger(t))
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	srv.Close()
}

// A missing master key is never replaced while the store holds values
// sealed with it; the refusal names the file (SQLite; the PostgreSQL
// replica case is TestReplicaWithoutTheMasterKeyIsRefused).
func TestAMissingMasterKeyIsNamedNotReplaced(t *testing.T) {
	env := testenv.Start(t)
	env.Stop()
	key := filepath.Join(env.DataDir, "master.key")
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: env.DataDir, Listen: "127.0.0.1:0", TrustDomain: env.Server.TrustDomain()}
	_, err := server.New(context.Background(), cfg, clock.Real{}, storetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), key+" is missing") {
		t.Fatalf("start without master.key: %v", err)
	}
	if _, err := os.Stat(key); !os.IsNotExist(err) {
		t.Fatalf("a new master key was written: %v", err)
	}
}
