package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey/tpmtest"
)

// tpmFixture is an identity service that attests TPMs, with agent "vault"
// pinned to a swtpm of its own.
type tpmFixture struct {
	fixture
	tpm *tpmkey.TPM
}

func newTPMFixture(t *testing.T) tpmFixture {
	t.Helper()
	f := newFixture(t, nil)
	box, err := secretbox.LoadOrCreate(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := identity.New(identity.Config{Store: f.db, CA: f.ca, Audit: audit.New(f.db, f.clock, storetest.Logger(t)), Clock: f.clock,
		Logger: storetest.Logger(t), Sealer: box})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	tp, err := tpmkey.Open(tpmtest.Start(t).Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	ek, err := tp.EKHash()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := svc.CreateAgent(ctx, operator, "vault", 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetAgentTPM(ctx, operator, "vault", ek); err != nil {
		t.Fatal(err)
	}
	return tpmFixture{fixture: f, tpm: tp}
}

func (f tpmFixture) joinToken(t *testing.T) string {
	t.Helper()
	tok, _, err := f.svc.CreateJoinToken(context.Background(), operator, "vault", 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// answer runs the TPM's side of a challenge for c, with the CSR signed by
// the certified key.
func (f tpmFixture) answer(t *testing.T, c identity.TPMCaller) api.TPMFinishRequest {
	t.Helper()
	p, begin, err := f.tpm.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	begin.Token = c.Token
	ch, err := f.svc.BeginTPM(context.Background(), c, begin)
	if err != nil {
		t.Fatal(err)
	}
	fin, key, err := p.Answer(ch)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	fin.Token, fin.CSR = c.Token, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	return fin
}

// refusals counts the recorded refusals of action for vault.
func (f tpmFixture) refusals(t *testing.T, action string) int {
	t.Helper()
	rows, err := f.db.Events(context.Background(), audit.Query{AfterSeq: -1, Actions: []string{action}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rows {
		ev, err := audit.Decode(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Decision == audit.Deny && strings.HasSuffix(ev.Target, "/agent/vault") {
			n++
		}
	}
	return n
}

// A compromised process on vault's machine, or a thief with vault's join
// token, tries to get an SVID that claims a TPM it does not hold; each
// attempt is refused and recorded, and nothing is issued.
func TestTPMEnrollmentAttacksAreRecorded(t *testing.T) {
	f := newTPMFixture(t)
	ctx := context.Background()
	refusedBy := func(t *testing.T, err error, kind error, words string) {
		t.Helper()
		if !errors.Is(err, kind) || !strings.Contains(err.Error(), words) || !identity.IsRecorded(err) {
			t.Fatalf("got %v, want a recorded %v refusal saying %q", err, kind, words)
		}
	}

	t.Run("a software key for a TPM-pinned agent", func(t *testing.T) {
		_, err := f.svc.Enroll(ctx, f.joinToken(t), csr(t))
		refusedBy(t, err, fault.Forbidden, "must enroll with its TPM")
	})
	t.Run("an answer to a challenge issued to another join token", func(t *testing.T) {
		fin := f.answer(t, identity.TPMCaller{Token: f.joinToken(t)})
		fin.Token = f.joinToken(t)
		_, err := f.svc.FinishTPM(ctx, identity.TPMCaller{Token: fin.Token}, fin)
		refusedBy(t, err, attestation.ErrRefused, "issued to another caller")
	})
	t.Run("an answer after the challenge expired", func(t *testing.T) {
		tok := f.joinToken(t)
		fin := f.answer(t, identity.TPMCaller{Token: tok})
		f.clock.Advance(attestation.ChallengeTTL)
		_, err := f.svc.FinishTPM(ctx, identity.TPMCaller{Token: tok}, fin)
		refusedBy(t, err, attestation.ErrRefused, "expired")
	})
	t.Run("a session forged or sealed elsewhere", func(t *testing.T) {
		tok := f.joinToken(t)
		fin := f.answer(t, identity.TPMCaller{Token: tok})
		fin.Session = strings.Repeat("A", len(fin.Session))
		_, err := f.svc.FinishTPM(ctx, identity.TPMCaller{Token: tok}, fin)
		refusedBy(t, err, attestation.ErrRefused, "not issued here")
	})

	tok := f.joinToken(t)
	fin := f.answer(t, identity.TPMCaller{Token: tok})
	issued, err := f.svc.FinishTPM(ctx, identity.TPMCaller{Token: tok}, fin)
	if err != nil {
		t.Fatal(err)
	}
	if got := attestation.FromCertificate(issued.Leaf); got.Protection != attestation.TPM || got.Method != attestation.MethodEKPinned {
		t.Fatalf("issued SVID states %+v", got)
	}
	t.Run("the same answer replayed", func(t *testing.T) {
		_, err := f.svc.FinishTPM(ctx, identity.TPMCaller{Token: tok}, fin)
		refusedBy(t, err, fault.Unauthenticated, "already used")
	})
	p, err := f.svc.Authenticate(ctx, issued.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a software renewal", func(t *testing.T) {
		_, err := f.svc.Renew(ctx, p, csr(t))
		refusedBy(t, err, fault.Forbidden, "new proof from its TPM")
	})
	if got := f.refusals(t, audit.ActionSVIDIssue) + f.refusals(t, audit.ActionSVIDRenew); got != 6 {
		t.Fatalf("%d refusals recorded, want 6", got)
	}
	// Renewal with a new proof from the same TPM passes.
	f.clock.Advance(time.Second)
	if _, err := f.svc.FinishTPM(ctx, identity.TPMCaller{Peer: &p}, f.answer(t, identity.TPMCaller{Peer: &p})); err != nil {
		t.Fatalf("TPM renewal: %v", err)
	}
	certs, err := f.svc.AgentCerts(ctx, "vault")
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 {
		t.Fatalf("%d certificates issued, want the enrollment's and the renewal's", len(certs))
	}
}

// An agent no operator tied to a TPM cannot buy a "tpm" attestation with
// a TPM of the thief's: the TPM routes refuse it, and record it.
func TestTPMRoutesNeedARegisteredTPM(t *testing.T) {
	f := newTPMFixture(t)
	ctx := context.Background()
	if _, err := f.svc.CreateAgent(ctx, operator, "plain", 0, nil); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.svc.CreateJoinToken(ctx, operator, "plain", 0)
	if err != nil {
		t.Fatal(err)
	}
	p, begin, err := f.tpm.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	begin.Token = tok
	_, err = f.svc.BeginTPM(ctx, identity.TPMCaller{Token: tok}, begin)
	if !errors.Is(err, fault.Forbidden) || !identity.IsRecorded(err) || !strings.Contains(err.Error(), "no TPM registered") {
		t.Fatalf("got %v", err)
	}
}
