package testenv

import (
	"testing"
	"time"
)

// Await waits until cond holds, which other goroutines or processes make
// true, and fails the test if that takes longer than d. It returns how long
// it took. Tests wait on conditions this way, never for time to pass.
func Await(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(2 * time.Millisecond) // a poll interval, not a wait for time to pass
	}
	return time.Since(start)
}
