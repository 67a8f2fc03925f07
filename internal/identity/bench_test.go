package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// BenchmarkIssuance compares SVID issuance — CSR in (parsed, signature
// checked), SVID signed, audit record and certificate committed durably —
// with the raw ECDSA P-256 signing rate of the same machine, in one run.
// docs/benchmarks.md keeps the figures as ratios.
func BenchmarkIssuance(b *testing.B) {
	b.Run("raw_ecdsa_p256_sign", func(b *testing.B) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		digest := sha256.Sum256([]byte("bulkhead"))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, backend := range storetest.Backends() {
		for _, parallel := range []bool{false, true} {
			name := "svid_issue_persisted/" + backend.Name
			if parallel {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) { benchIssue(b, backend, parallel) })
		}
	}
}

func benchIssue(b *testing.B, backend storetest.Backend, parallel bool) {
	ctx := context.Background()
	db := backend.Open(b)
	clk := clock.Real{}
	authority, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: b.TempDir(), Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := identity.New(identity.Config{Store: db, CA: authority, Audit: audit.New(db, clk, storetest.Logger(b)), Clock: clk, Logger: storetest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.CreateAgent(ctx, operator, "alpha", 0, nil); err != nil {
		b.Fatal(err)
	}
	// The caller is the agent renewing with its current SVID.
	cur, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := authority.SignSVID(ca.SVIDRequest{ID: spiffeid.RequireFromPath(td, "/agent/alpha"), PublicKey: cur.Public(), TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	p := peer.Principal{ID: spiffeid.RequireFromPath(td, "/agent/alpha"), Kind: audit.ActorAgent, Name: "alpha", Cert: leaf}
	// CSRs are made beforehand: the agent's key generation is not the
	// control plane's cost.
	csrs := make([][]byte, b.N)
	for i := range csrs {
		csrs[i] = csr(b)
	}
	var next atomic.Int64
	issue := func() {
		i := next.Add(1) - 1
		if _, err := svc.Renew(ctx, p, csrs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	if parallel {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				issue()
			}
		})
	} else {
		for i := 0; i < b.N; i++ {
			issue()
		}
	}
	b.StopTimer()
	if n, _ := db.ListCerts(ctx, "alpha"); len(n) != b.N {
		b.Fatalf("%d certificates persisted, want %d", len(n), b.N)
	}
}
