package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

func testTokenStore(t *testing.T, db *store.DB) {
	ctx := context.Background()
	k := token.StoredKey{KID: "k1", Alg: "ES256", PrivateSealed: []byte{1, 2, 3}, PublicJWK: `{}`, CreatedAt: t0, ActiveAt: t0}
	if err := db.InsertTokenKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	dup := k
	dup.KID = "k2"
	if err := db.InsertTokenKey(ctx, dup); !errors.Is(err, fault.Conflict) {
		t.Fatalf("second key for one slot: %v", err)
	}
	next := token.StoredKey{KID: "k3", Alg: "ES256", PrivateSealed: []byte{4}, PublicJWK: `{}`, CreatedAt: t0, ActiveAt: t0.Add(time.Hour)}
	if err := db.InsertTokenKey(ctx, next); err != nil {
		t.Fatal(err)
	}
	keys, err := db.TokenKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].KID != "k1" || string(keys[1].PrivateSealed) != "\x04" || !keys[1].ActiveAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("keys = %+v, %v", keys, err)
	}

	r := token.Resource{URI: "https://gw.test", Scopes: []string{"mcp"}, CreatedAt: t0, CreatedBy: "op"}
	if err := db.CreateResource(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateResource(ctx, r); !errors.Is(err, fault.Conflict) {
		t.Fatalf("duplicate resource: %v", err)
	}
	if got, err := db.GetResource(ctx, r.URI); err != nil || got.Scopes[0] != "mcp" || !got.CreatedAt.Equal(t0) {
		t.Fatalf("get resource: %+v %v", got, err)
	}
	if list, _ := db.ListResources(ctx); len(list) != 1 {
		t.Fatalf("list = %v", list)
	}
	if err := db.DeleteResource(ctx, r.URI); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetResource(ctx, r.URI); !errors.Is(err, fault.NotFound) {
		t.Fatalf("deleted resource: %v", err)
	}
	if err := db.DeleteResource(ctx, r.URI); !errors.Is(err, fault.NotFound) {
		t.Fatalf("delete twice: %v", err)
	}

	rev := token.Revoked{JTI: "j1", RevokedAt: t0, ExpiresAt: t0.Add(time.Minute), RevokedBy: "op", Reason: "x"}
	for i := 0; i < 2; i++ { // idempotent
		if err := db.RevokeToken(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.RevokedTokens(ctx, []string{"j1", "j2"})
	if err != nil || !got["j1"] || got["j2"] {
		t.Fatalf("revoked = %v, %v", got, err)
	}
	if got, err := db.RevokedTokens(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("revoked(nil) = %v, %v", got, err)
	}

	if err := db.UseClientAssertion(ctx, "a1", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := db.UseClientAssertion(ctx, "a1", t0.Add(time.Minute)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("replayed assertion: %v", err)
	}
}
