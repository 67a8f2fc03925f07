package client_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestRotatorRenewsAtHalfLifeAndStopsWhenRevoked(t *testing.T) {
	env := testenv.Start(t)
	dir := env.Enroll("alpha")
	r, err := client.NewRotator(env.URL, dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	first := r.Source().Leaf()
	fake := clock.NewFake(time.Now())
	r.Clock = fake
	rotated := make(chan *x509svid.SVID, 1)
	r.OnRotate = func(s *x509svid.SVID) {
		select {
		case rotated <- s:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// Nothing happens before half-life.
	waitForWaiter(t, fake)
	select {
	case <-rotated:
		t.Fatal("rotated before half-life")
	case <-time.After(50 * time.Millisecond):
	}
	fake.Advance(31 * time.Minute) // default TTL 1h
	var svid *x509svid.SVID
	select {
	case svid = <-rotated:
	case <-time.After(10 * time.Second):
		t.Fatal("no rotation after half-life")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if svid.Certificates[0].Equal(first) || !r.Source().Leaf().Equal(svid.Certificates[0]) {
		t.Fatal("source does not hold the new SVID")
	}
	if onDisk, _ := svidfile.Load(dir); !onDisk.Leaf().Equal(svid.Certificates[0]) {
		t.Fatal("new SVID not written to disk")
	}

	// A revoked identity is refused for good: the rotator stops and says
	// why instead of retrying forever.
	if _, err := env.Operator.RevokeAgent(context.Background(), "alpha", "test"); err != nil {
		t.Fatal(err)
	}
	r2, err := client.NewRotator(env.URL, dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	r2.Clock = clock.NewFake(time.Now().Add(31 * time.Minute))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := r2.Run(ctx2); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Run after revocation returned %v, want a refusal", err)
	}
}

func waitForWaiter(t *testing.T, f *clock.Fake) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); f.Waiters() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("rotator never waited on the clock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEnrollRefusesAServerWithoutThePinnedCA(t *testing.T) {
	env := testenv.Start(t)
	other := testenv.Start(t)
	ctx := context.Background()
	if _, err := env.Operator.CreateAgent(ctx, "alpha", 0); err != nil {
		t.Fatal(err)
	}
	tok, err := env.Operator.JoinToken(ctx, "alpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The token is presented to an impostor control plane (another CA).
	_, err = client.Enroll(ctx, other.URL, tok.Token, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "does not hold the CA pinned by the join token") {
		t.Fatalf("enroll against an impostor: %v", err)
	}
	// The impostor never saw the token: it is still good for the real one.
	if _, err := client.Enroll(ctx, env.URL, tok.Token, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func TestServerURLMustBeHTTPS(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8443", "127.0.0.1:8443", ""} {
		if _, err := client.Enroll(context.Background(), u, "bhj1.x.y", t.TempDir()); err == nil {
			t.Errorf("accepted server URL %q", u)
		}
	}
}
