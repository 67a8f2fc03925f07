package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/secret"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func secretRecord(name string, version int64, sealed string, at time.Time) secret.Record {
	return secret.Record{Meta: secret.Meta{Name: name, Version: version, CreatedAt: at, UpdatedAt: at, UpdatedBy: "spiffe://bulkhead.local/operator/admin"},
		Sealed: []byte(sealed)}
}

func testSecretStore(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if head, live, err := db.SecretHead(ctx, "files-token"); err != nil || live || head.Version != 0 {
		t.Fatalf("head of an unset secret = %+v %v %v", head, live, err)
	}
	if _, err := db.GetSecret(ctx, "files-token"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("get unset: %v", err)
	}

	// Versions are a compare-and-set chain starting at 1.
	steps := []struct {
		name    string
		version int64
		want    error
	}{
		{"first set is version 1", 1, nil},
		{"version 1 again conflicts", 1, fault.Conflict},
		{"skipping a version conflicts", 3, fault.Conflict},
		{"replacing is version 2", 2, nil},
	}
	for i, st := range steps {
		err := db.PutSecret(ctx, secretRecord("files-token", st.version, "sealed-"+st.name, t0.Add(time.Duration(i)*time.Minute)))
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Fatalf("%s: got %v, want %v", st.name, err, st.want)
		}
	}
	r, err := db.GetSecret(ctx, "files-token")
	if err != nil || r.Version != 2 || string(r.Sealed) != "sealed-replacing is version 2" ||
		!r.CreatedAt.Equal(t0) || !r.UpdatedAt.Equal(t0.Add(3*time.Minute)) || r.UpdatedBy == "" {
		t.Fatalf("get = %+v (%q), %v; want version 2, created at the first set", r.Meta, r.Sealed, err)
	}
	if err := db.PutSecret(ctx, secretRecord("billing-key", 1, "b", t0)); err != nil {
		t.Fatal(err)
	}
	list, err := db.ListSecrets(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "billing-key" || list[1].Name != "files-token" || list[1].Version != 2 {
		t.Fatalf("list = %+v, %v", list, err)
	}

	// Deletion leaves a tombstone: gone from get and list, but the version
	// count continues.
	if err := db.DeleteSecret(ctx, "files-token", 1, t0, "op"); !errors.Is(err, fault.Conflict) {
		t.Fatalf("delete at a stale version: %v", err)
	}
	if err := db.DeleteSecret(ctx, "files-token", 2, t0.Add(time.Hour), "op"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteSecret(ctx, "files-token", 2, t0.Add(time.Hour), "op"); !errors.Is(err, fault.Conflict) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := db.GetSecret(ctx, "files-token"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if list, _ := db.ListSecrets(ctx); len(list) != 1 || list[0].Name != "billing-key" {
		t.Fatalf("list after delete = %+v", list)
	}
	head, live, err := db.SecretHead(ctx, "files-token")
	if err != nil || live || head.Version != 2 || !head.UpdatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("head of a deleted secret = %+v %v %v", head, live, err)
	}
	if err := db.PutSecret(ctx, secretRecord("files-token", 1, "again", t0)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("restarting the count after a delete: %v", err)
	}
	later := t0.Add(2 * time.Hour)
	if err := db.PutSecret(ctx, secretRecord("files-token", 3, "v3", later)); err != nil {
		t.Fatal(err)
	}
	if r, err := db.GetSecret(ctx, "files-token"); err != nil || r.Version != 3 || string(r.Sealed) != "v3" || !r.CreatedAt.Equal(later) {
		t.Fatalf("set after delete = %+v, %v; want version 3 created anew", r.Meta, err)
	}
	if err := db.PutSecret(ctx, secret.Record{Meta: secret.Meta{Name: "x", Version: 1}}); err == nil {
		t.Fatal("stored a secret without a sealed value")
	}
	t.Run("racing writers", func(t *testing.T) { testSecretStoreRace(t, db) })
}

// Two writers racing for one version: exactly one wins, on either store.
func testSecretStoreRace(t *testing.T, db *store.DB) {
	ctx := context.Background()
	for v := int64(1); v <= 3; v++ {
		const writers = 4
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins int
		)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.PutSecret(ctx, secretRecord("race", v, "w", t0))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, fault.Conflict):
					t.Errorf("version %d: %v", v, err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("version %d: %d writers won, want 1", v, wins)
		}
	}
}
