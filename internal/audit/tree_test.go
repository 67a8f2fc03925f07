package audit_test

import (
	"fmt"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

func TestFrontierIndexes(t *testing.T) {
	cases := []struct {
		n    int64
		want []int64
	}{
		{0, []int64{}},
		{1, []int64{tlog.StoredHashIndex(0, 0)}},
		{2, []int64{tlog.StoredHashIndex(1, 0)}},
		{3, []int64{tlog.StoredHashIndex(1, 0), tlog.StoredHashIndex(0, 2)}},
		{8, []int64{tlog.StoredHashIndex(3, 0)}},
		{13, []int64{tlog.StoredHashIndex(3, 0), tlog.StoredHashIndex(2, 2), tlog.StoredHashIndex(0, 12)}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.n), func(t *testing.T) {
			if got := audit.FrontierIndexes(c.n); !slices.Equal(got, c.want) {
				t.Fatalf("FrontierIndexes(%d) = %v, want %v", c.n, got, c.want)
			}
		})
	}
}

// TestFrontierMatchesTlog checks the in-memory frontier against tlog over
// the full set of stored hashes, at every size, including a frontier
// restored from stored hashes half-way (as a writer does per transaction).
func TestFrontierMatchesTlog(t *testing.T) {
	all := map[int64]tlog.Hash{}
	full := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			h, ok := all[x]
			if !ok {
				return nil, fmt.Errorf("missing %d", x)
			}
			out[i] = h
		}
		return out, nil
	})
	f, err := audit.NewFrontier(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(0); n < 600; n++ {
		data := []byte(fmt.Sprintf("record %d", n))
		want, err := tlog.StoredHashes(n, data, full)
		if err != nil {
			t.Fatal(err)
		}
		if n == 300 { // restart from stored hashes
			hs, err := full.ReadHashes(audit.FrontierIndexes(n))
			if err != nil {
				t.Fatal(err)
			}
			if f, err = audit.NewFrontier(n, hs); err != nil {
				t.Fatal(err)
			}
		}
		got, err := f.AppendRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("record %d: %d stored hashes, want %d", n, len(got), len(want))
		}
		for i := range want {
			if got[i].Index != tlog.StoredHashIndex(0, n)+int64(i) || got[i].Hash != want[i] {
				t.Fatalf("record %d: stored hash %d = %+v, want %v", n, i, got[i], want[i])
			}
			all[got[i].Index] = got[i].Hash
		}
		root, err := f.Root()
		if err != nil {
			t.Fatal(err)
		}
		if wantRoot, _ := tlog.TreeHash(n+1, full); root != wantRoot {
			t.Fatalf("root at %d = %v, want %v", n+1, root, wantRoot)
		}
	}
}

func TestNewFrontierNeedsTheRightHashes(t *testing.T) {
	if _, err := audit.NewFrontier(3, []tlog.Hash{{}}); err == nil {
		t.Fatal("a frontier of size 3 was built from one hash")
	}
}
