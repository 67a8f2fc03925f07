package token

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

// memKeys is an in-memory KeyStore with the store's one-key-per-slot rule.
// (The SQL implementation runs the store conformance suite.)
type memKeys struct {
	mu   sync.Mutex
	keys []StoredKey
}

func (m *memKeys) TokenKeys(context.Context) ([]StoredKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]StoredKey(nil), m.keys...), nil
}

func (m *memKeys) InsertTokenKey(_ context.Context, k StoredKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, have := range m.keys {
		if have.ActiveAt.Equal(k.ActiveAt) {
			return fault.Conflict
		}
	}
	m.keys = append(m.keys, k)
	return nil
}

func kids(ks []*signingKey) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.KID
	}
	return out
}

// Keys rotate every period; the successor is published before it signs,
// and a replaced key stays published until every token it signed expired.
func TestSigningKeysRotateWithOverlap(t *testing.T) {
	ctx := context.Background()
	db := &memKeys{}
	box, err := secretbox.LoadOrCreate(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	const period = 24 * time.Hour
	ks := &keyset{store: db, box: box, period: period, lead: time.Hour, maxTTL: MaxTTL}
	if err := ks.refresh(ctx, clk.Now()); err != nil {
		t.Fatal(err)
	}
	k1, err := ks.current(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	step := func(d time.Duration) {
		clk.Advance(d)
		if err := ks.refresh(ctx, clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	step(period - 2*time.Hour) // before the lead: nothing new
	if got := kids(ks.published(clk.Now())); len(got) != 1 {
		t.Fatalf("published early: %v", got)
	}
	step(90 * time.Minute) // inside the lead: successor published, not signing
	pub := kids(ks.published(clk.Now()))
	if len(pub) != 2 {
		t.Fatalf("successor not pre-published: %v", pub)
	}
	if cur, _ := ks.current(clk.Now()); cur.KID != k1.KID {
		t.Fatal("successor signs before its time")
	}
	step(30 * time.Minute) // the successor's slot
	k2, _ := ks.current(clk.Now())
	if k2.KID == k1.KID {
		t.Fatal("key did not rotate")
	}
	if got := kids(ks.published(clk.Now())); len(got) != 2 {
		t.Fatalf("retired key withdrawn while its tokens live: %v", got)
	}
	step(MaxTTL + time.Second)
	if got := kids(ks.published(clk.Now())); len(got) != 1 || got[0] != k2.KID {
		t.Fatalf("retired key still published after its tokens expired: %v", got)
	}
	// A second replica on the same store converges on the same keys.
	other := &keyset{store: db, box: box, period: period, lead: time.Hour, maxTTL: MaxTTL}
	if err := other.refresh(ctx, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if cur, _ := other.current(clk.Now()); cur.KID != k2.KID {
		t.Fatalf("replica signs with %s, want %s", cur.KID, k2.KID)
	}
	// The private keys are sealed: another master key cannot open them.
	wrongBox, _ := secretbox.LoadOrCreate(filepath.Join(t.TempDir(), "other.key"))
	stranger := &keyset{store: db, box: wrongBox, period: period, lead: time.Hour, maxTTL: MaxTTL}
	if err := stranger.load(ctx); err == nil {
		t.Fatal("signing keys opened with another master key")
	}
}
