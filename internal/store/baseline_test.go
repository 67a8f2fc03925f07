package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func testBaselines(t *testing.T, db *store.DB) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if state, through, err := db.Baseline(ctx, "a"); err != nil || state != nil || through != -1 {
		t.Fatalf("none stored: %q %d %v", state, through, err)
	}
	for _, step := range []struct {
		through int64
		state   string
	}{{10, "ten"}, {5, "five"}, {10, "ten again"}, {20, "twenty"}} {
		if err := db.PutBaseline(ctx, "a", step.through, []byte(step.state), now); err != nil {
			t.Fatal(err)
		}
	}
	if state, through, err := db.Baseline(ctx, "a"); err != nil || string(state) != "twenty" || through != 20 {
		t.Fatalf("stored: %q %d %v", state, through, err)
	}
	if state, _, _ := db.Baseline(ctx, "b"); state != nil {
		t.Fatalf("another agent's: %q", state)
	}
}
