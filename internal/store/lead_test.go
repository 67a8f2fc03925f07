package store_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/run"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// leadWait bounds the waits on PostgreSQL's asynchronous steps (a
// terminated backend letting its locks go), so a broken lease fails the
// test instead of hanging it.
const leadWait = 30 * time.Second

// leadName is a lock name no other test, in this package or another run in
// parallel against the same server, uses: advisory locks are per database,
// not per schema.
func leadName(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return t.Name() + "/" + hex.EncodeToString(b[:])
}

// leadKey is the store's key derivation, pinned here: replicas of two
// versions must agree on it, or both would lead during a rolling upgrade.
func leadKey(name string) int64 {
	sum := sha256.Sum256([]byte("bulkhead/lead/" + name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

func mustLead(t *testing.T, db *store.DB, name string) run.Lease {
	t.Helper()
	l, err := db.TryLead(context.Background(), name)
	if err != nil {
		t.Fatalf("try lead %s: %v", name, err)
	}
	if l == nil {
		t.Fatalf("lead of %s refused, want granted", name)
	}
	t.Cleanup(l.Release)
	return l
}

func mustNotLead(t *testing.T, db *store.DB, name string) {
	t.Helper()
	l, err := db.TryLead(context.Background(), name)
	if err != nil {
		t.Fatalf("try lead %s: %v", name, err)
	}
	if l != nil {
		l.Release()
		t.Fatalf("lead of %s granted while another holds it", name)
	}
}

func notLost(t *testing.T, l run.Lease) {
	t.Helper()
	select {
	case <-l.Lost():
		t.Fatal("lease lost without its session ending")
	default:
	}
}

func TestLeadSQLiteIsAlwaysGranted(t *testing.T) {
	db := storetest.Backends()[0].Open(t)
	name := leadName(t)
	a := mustLead(t, db, name)
	b := mustLead(t, db, name) // one process: nobody to exclude
	notLost(t, a)
	a.Release()
	a.Release()
	notLost(t, a)
	notLost(t, b)
}

// twoReplicas opens two stores on the same PostgreSQL database and schema,
// as two replicas of the control plane would.
func twoReplicas(t *testing.T) (a, b *store.DB) {
	t.Helper()
	dsn := storetest.PostgresDSN(t)
	open := func() *store.DB {
		db, err := store.Open(context.Background(), dsn, t.TempDir(), storetest.Logger(t))
		if err != nil {
			t.Fatalf("open postgres store: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	return open(), open()
}

func TestLeadPostgresIsExclusive(t *testing.T) {
	a, b := twoReplicas(t)
	name := leadName(t)

	la := mustLead(t, a, name)
	mustNotLead(t, b, name)
	// Session locks are reentrant: a second lease on the same replica
	// must not be granted through another of its pooled connections.
	mustNotLead(t, a, name)
	// Other names are independent.
	mustLead(t, b, name+"/other")

	la.Release()
	la.Release()
	notLost(t, la)
	lb := mustLead(t, b, name)
	// The released connection went back to a's pool unlocked: a cannot
	// lead through it now.
	mustNotLead(t, a, name)
	notLost(t, lb)
}

func TestLeadPostgresIsLostWhenTheHolderIsKilled(t *testing.T) {
	a, b := twoReplicas(t)
	name := leadName(t)
	key := leadKey(name)
	ctx, cancel := context.WithTimeout(context.Background(), leadWait)
	defer cancel()

	la := mustLead(t, a, name)
	mustNotLead(t, b, name)

	var pid int
	err := b.SQL().QueryRowContext(ctx, `
		SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		  AND classid::bigint = $1 AND objid::bigint = $2
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(uint32(uint64(key)>>32)), int64(uint32(uint64(key)))).Scan(&pid)
	if err != nil {
		t.Fatalf("find the holder's backend in pg_locks: %v", err)
	}
	var killed bool
	if err := b.SQL().QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate backend %d: %v (terminated: %v)", pid, err, killed)
	}

	select {
	case <-la.Lost():
	case <-ctx.Done():
		t.Fatal("the killed holder's lease was not lost")
	}
	// The client hears of the termination before the dying backend has
	// let its locks go; wait for that by blocking on the lock itself.
	waitFree(ctx, t, b.SQL(), key)

	mustLead(t, b, name)
	la.Release() // after loss: no unlock to run, nothing to hang on
	mustNotLead(t, a, name)
}

// waitFree blocks until key's advisory lock can be taken, then lets it go.
func waitFree(ctx context.Context, t *testing.T, db *sql.DB, key int64) {
	t.Helper()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatalf("wait for the killed holder's lock to be freed: %v", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		t.Fatalf("unlock: %v", err)
	}
}
