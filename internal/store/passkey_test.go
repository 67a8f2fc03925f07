package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/console"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func testPasskeys(t *testing.T, db *store.DB) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	op := "spiffe://bulkhead.local/operator/ada"
	for _, l := range []console.Link{
		{Hash: "h1", Operator: op, ExpiresAt: now.Add(time.Hour), CreatedAt: now, CreatedBy: op},
		{Hash: "old", Operator: op, ExpiresAt: now.Add(-time.Second), CreatedAt: now.Add(-time.Hour), CreatedBy: op},
	} {
		if err := db.CreatePasskeyLink(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := db.PasskeyLink(ctx, "h1"); err != nil || l.Operator != op || !l.UsedAt.IsZero() || !l.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("link: %+v %v", l, err)
	}
	p := console.Passkey{ID: []byte{1, 2, 3}, Operator: op, Credential: []byte(`{"a":1}`), CreatedAt: now}
	for _, bad := range []struct {
		name string
		p    console.Passkey
		link string
	}{
		{"an expired link", p, "old"},
		{"another operator's link", console.Passkey{ID: []byte{9}, Operator: "spiffe://bulkhead.local/operator/eve", Credential: []byte("{}"), CreatedAt: now}, "h1"},
		{"an unknown link", p, "nope"},
	} {
		if err := db.AddPasskey(ctx, bad.p, bad.link, now); !errors.Is(err, fault.Conflict) {
			t.Fatalf("%s: %v", bad.name, err)
		}
	}
	if err := db.AddPasskey(ctx, p, "h1", now); err != nil {
		t.Fatal(err)
	}
	if err := db.AddPasskey(ctx, console.Passkey{ID: []byte{4}, Operator: op, Credential: []byte("{}"), CreatedAt: now}, "h1", now); !errors.Is(err, fault.Conflict) {
		t.Fatalf("a link used twice: %v", err)
	}
	if err := db.UsePasskey(ctx, p.ID, []byte(`{"a":2}`), 5, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// A counter that does not grow (a clone, or the slower of two racing
	// ceremonies) is refused and changes nothing.
	for _, n := range []uint32{5, 4, 0} {
		if err := db.UsePasskey(ctx, p.ID, []byte(`{"a":"clone"}`), n, now.Add(time.Minute)); !errors.Is(err, fault.Conflict) {
			t.Fatalf("counter %d: %v", n, err)
		}
	}
	got, err := db.Passkey(ctx, p.ID)
	if err != nil || got.Operator != op || string(got.Credential) != `{"a":2}` || !got.LastUsedAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("passkey: %+v %v", got, err)
	}
	if list, err := db.PasskeysOf(ctx, op); err != nil || len(list) != 1 {
		t.Fatalf("passkeys of ada: %+v %v", list, err)
	}
	if _, err := db.Passkey(ctx, []byte{7}); !errors.Is(err, fault.NotFound) {
		t.Fatalf("unknown passkey: %v", err)
	}
	if err := db.SpendChallenge(ctx, "c1", now.Add(time.Minute), now); err != nil {
		t.Fatal(err)
	}
	if err := db.SpendChallenge(ctx, "c1", now.Add(time.Minute), now); !errors.Is(err, fault.Conflict) {
		t.Fatalf("a challenge answered twice: %v", err)
	}
	// Once expired it is forgotten (the ceremony itself is refused by then).
	if err := db.SpendChallenge(ctx, "c1", now.Add(time.Hour), now.Add(2*time.Minute)); err != nil {
		t.Fatalf("an expired challenge: %v", err)
	}
	if n, err := db.RevokePasskeys(ctx, op, now.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	if got, err := db.Passkey(ctx, p.ID); err != nil || !got.RevokedAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("revoked passkey: %+v %v", got, err)
	}
	if err := db.UsePasskey(ctx, p.ID, []byte(`{}`), 9, now.Add(2*time.Hour)); !errors.Is(err, fault.NotFound) {
		t.Fatalf("a revoked passkey used: %v", err)
	}
}
