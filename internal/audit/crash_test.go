package audit_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// Environment of the child process of TestCrashSafety.
const (
	envCrashDSN  = "BULKHEAD_AUDIT_CRASH_DSN"
	envCrashDir  = "BULKHEAD_AUDIT_CRASH_DIR"
	envCrashKeys = "BULKHEAD_AUDIT_CRASH_KEYS"
)

// TestCrashSafety runs a child process that appends under load (many
// concurrent writers, checkpoints being signed) and prints the sequence
// number of every event whose Record returned, that is, every action that
// would have gone ahead. The parent kills it with SIGKILL mid-stream,
// reopens the store, and checks that every acknowledged event is there, the
// log verifies, and appending resumes.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn, dir := b.DSN(t)
			keys := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), envCrashDSN+"="+dsn, envCrashDir+"="+dir, envCrashKeys+"="+keys)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			acked := map[int64]string{}
			sc := bufio.NewScanner(out)
			deadline := time.Now().Add(20 * time.Second)
			for sc.Scan() && len(acked) < 3000 && time.Now().Before(deadline) {
				f := strings.Fields(sc.Text())
				if len(f) != 3 || f[0] != "ack" {
					continue
				}
				seq, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					continue
				}
				acked[seq] = f[2]
			}
			// Kill it mid-append: no shutdown, no final checkpoint.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if len(acked) < 100 {
				t.Fatalf("the child acknowledged only %d events before the deadline", len(acked))
			}
			t.Logf("child killed after %d acknowledged events", len(acked))

			ctx := context.Background()
			db, err := store.Open(ctx, dsn, dir, storetest.Logger(t))
			if err != nil {
				t.Fatalf("reopen after the crash: %v", err)
			}
			defer db.Close()
			for seq, marker := range acked {
				rows, err := db.Events(ctx, audit.Query{AfterSeq: seq - 1, Limit: 1})
				if err != nil || len(rows) != 1 || rows[0].Seq != seq {
					t.Fatalf("acknowledged event %d is gone after the crash: %v", seq, err)
				}
				ev, err := audit.EventFromRow(rows[0])
				if err != nil || ev.Detail["marker"] != marker {
					t.Fatalf("acknowledged event %d is not the one recorded (%v): %+v", seq, err, ev)
				}
			}
			// Restart: the control plane signs what is there, then
			// verifies and appends as before.
			key, _, err := audit.LoadOrCreateKey(keys, logName)
			if err != nil {
				t.Fatal(err)
			}
			clk := clock.NewFake(t0)
			cp, err := audit.NewCheckpointer(audit.CheckpointerConfig{Store: db, Key: key, Clock: clk, Logger: storetest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cp.Checkpoint(ctx); err != nil {
				t.Fatalf("checkpoint after the crash: %v", err)
			}
			rep, err := audit.Verify(ctx, db, audit.VerifyOptions{Verifier: key.Verifier})
			if err != nil {
				t.Fatalf("the log does not verify after the crash: %v", err)
			}
			if rep.Size < int64(len(acked)) {
				t.Fatalf("the log has %d entries, fewer than the %d acknowledged", rep.Size, len(acked))
			}
			if _, err := audit.New(db, clk, storetest.Logger(t)).Record(ctx, event(1)); err != nil {
				t.Fatalf("append after the crash: %v", err)
			}
		})
	}
}

// TestCrashChild is the child process of TestCrashSafety; run directly it
// does nothing.
func TestCrashChild(t *testing.T) {
	dsn, ok := os.LookupEnv(envCrashDSN)
	if !ok {
		t.Skip("the child process of TestCrashSafety")
	}
	ctx := context.Background()
	db, err := store.Open(ctx, dsn, os.Getenv(envCrashDir), storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := audit.LoadOrCreateKey(os.Getenv(envCrashKeys), logName)
	if err != nil {
		t.Fatal(err)
	}
	l := audit.New(db, clock.Real{}, storetest.Logger(t))
	cp, err := audit.NewCheckpointer(audit.CheckpointerConfig{Store: db, Key: key, Clock: clock.Real{},
		Logger: storetest.Logger(t), Log: l, Every: 200, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go cp.Run(ctx)
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				ev := event(i)
				marker := fmt.Sprintf("w%d-%d", g, i)
				ev.Detail = map[string]string{"marker": marker}
				rec, err := l.Record(ctx, ev)
				if err != nil {
					continue // refused: the action would not have happened
				}
				// Acknowledge only after the commit, and flush at once:
				// what the parent reads is what was acknowledged.
				mu.Lock()
				fmt.Fprintf(w, "ack %d %s\n", rec.Seq, marker)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
