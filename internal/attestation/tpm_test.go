package attestation_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey/tpmtest"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// device is one swtpm, opened.
func device(t *testing.T) *tpmkey.TPM { return benchDevice(t) }

func benchDevice(t testing.TB) *tpmkey.TPM {
	t.Helper()
	tp, err := tpmkey.Open(tpmtest.Start(t).Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	return tp
}

// round runs one enrollment's TPM side against v, returning the session
// and the answer.
func round(t *testing.T, tp *tpmkey.TPM, v attestation.Verifier, pin func(api.TPMBeginRequest) string) (attestation.Session, api.TPMFinishRequest, crypto.PublicKey) {
	t.Helper()
	p, begin, err := tp.Begin()
	if err != nil {
		t.Fatal(err)
	}
	// A TPM without a resource manager has three object slots: unload
	// both keys before the next round.
	defer p.Close()
	s, ch, err := v.Challenge(begin, pin(begin), "tok", t0)
	if err != nil {
		t.Fatal(err)
	}
	fin, key, err := p.Answer(ch)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	return s, fin, key.Public()
}

func own(b api.TPMBeginRequest) string { return attestation.EKHash(b.EKPublic) }

func TestTPMProofAccepted(t *testing.T) {
	tp := device(t)
	s, fin, want := round(t, tp, attestation.Verifier{}, own)
	pub, err := attestation.Verifier{}.Verify(s, fin, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
		t.Fatal("verified key is not the TPM key")
	}
	if s.Method != attestation.MethodEKPinned {
		t.Fatalf("method %q", s.Method)
	}
}

// TestForgedTPMProofsRefused is the attacker's side: every way to pass off
// a key or a TPM as another is refused.
func TestForgedTPMProofsRefused(t *testing.T) {
	a, b := device(t), device(t)
	v := attestation.Verifier{}
	sA, finA, _ := round(t, a, v, own)
	sA2, finA2, _ := round(t, a, v, own)
	_, finB, _ := round(t, b, v, own)
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	softPub, err := tpm2.Public{Type: tpm2.AlgECC, NameAlg: tpm2.AlgSHA256,
		Attributes: tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth,
		ECCParameters: &tpm2.ECCParams{CurveID: tpm2.CurveNISTP256, Sign: &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			Point: tpm2.ECPoint{XRaw: soft.X.Bytes(), YRaw: soft.Y.Bytes()}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	pcr0 := sha256.Sum256([]byte("a boot chain the operator does not run"))
	cases := []struct {
		name string
		v    attestation.Verifier
		s    attestation.Session
		fin  func() api.TPMFinishRequest
		at   time.Time
	}{
		{"a quote replayed from an earlier enrollment", v, sA2, func() api.TPMFinishRequest {
			f := finA
			f.Activated = finA2.Activated // the attacker saw this session's secret
			return f
		}, t0},
		{"an answer from another TPM", v, sA, func() api.TPMFinishRequest {
			f := finB
			f.Activated = finA.Activated
			return f
		}, t0},
		{"a quote over a stale nonce", v, sA, func() api.TPMFinishRequest { return finA }, t0.Add(attestation.ChallengeTTL)},
		{"a software key claimed as TPM-resident", v, sA, func() api.TPMFinishRequest {
			f := finA
			f.Key.Public = softPub
			return f
		}, t0},
		{"a key certified in another enrollment", v, sA, func() api.TPMFinishRequest {
			f := finA
			f.Key = finA2.Key
			return f
		}, t0},
		{"an unactivated credential", v, sA, func() api.TPMFinishRequest {
			f := finA
			f.Activated = make([]byte, len(f.Activated))
			return f
		}, t0},
		{"PCRs outside the policy", attestation.Verifier{PCRs: map[int][]byte{0: pcr0[:]}}, sA, func() api.TPMFinishRequest { return finA }, t0},
		{"a PCR listed twice, the first time with the policy's value", attestation.Verifier{PCRs: map[int][]byte{0: pcr0[:]}}, sA, func() api.TPMFinishRequest {
			f := finA
			f.PCRs = append([]api.TPMPCR{{Index: 0, Digest: pcr0[:]}}, f.PCRs...)
			return f
		}, t0},
		{"PCR values the quote does not cover", v, sA, func() api.TPMFinishRequest {
			f := finA
			f.PCRs = append([]api.TPMPCR(nil), f.PCRs...)
			f.PCRs[0] = api.TPMPCR{Index: 0, Digest: pcr0[:]}
			return f
		}, t0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.v.Verify(tc.s, tc.fin(), tc.at)
			if !errors.Is(err, attestation.ErrRefused) {
				t.Fatalf("got %v, want a refusal", err)
			}
			t.Log(err)
		})
	}
	// The honest answer still passes: the cases above failed for their
	// forgery, not for a broken setup.
	if _, err := v.Verify(sA, finA, t0); err != nil {
		t.Fatal(err)
	}
}

func TestEndorsementKeyMustBePinnedOrCertified(t *testing.T) {
	tp := device(t)
	_, begin, err := tp.Begin()
	if err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("another TPM"))
	for name, pin := range map[string]string{"another TPM's EK": attestation.EKHash(other[:]), "no pin and no EK CA": ""} {
		if _, _, err := (attestation.Verifier{}).Challenge(begin, pin, "tok", t0); !errors.Is(err, attestation.ErrRefused) {
			t.Errorf("%s: got %v, want a refusal", name, err)
		}
	}
}

// A TPM whose endorsement key certificate chains to a trusted maker is
// accepted without a pin (tpm-ek-ca); one certified by another maker, or
// showing no certificate, is refused.
func TestEndorsementKeyCertifiedByTrustedMaker(t *testing.T) {
	sw, caPEM := tpmtest.StartCertified(t)
	_, otherPEM := tpmtest.StartCertified(t)
	tp, err := tpmkey.Open(sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	p, begin, err := tp.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if len(begin.EKCertificate) == 0 {
		t.Fatal("the provisioned TPM shows no EK certificate")
	}
	pool := func(path string) *x509.CertPool {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cp := x509.NewCertPool()
		cp.AppendCertsFromPEM(b)
		return cp
	}
	// The maker's certificate was issued just now, by the real clock.
	now := time.Now()
	trusted := attestation.Verifier{EKRoots: pool(caPEM)}
	s, ch, err := trusted.Challenge(begin, "", "tok", now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Method != attestation.MethodEKCA {
		t.Fatalf("method %q", s.Method)
	}
	fin, key, err := p.Answer(ch)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	if _, err := trusted.Verify(s, fin, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (attestation.Verifier{EKRoots: pool(otherPEM)}).Challenge(begin, "", "tok", now); !errors.Is(err, attestation.ErrRefused) {
		t.Fatalf("another maker's CA: %v", err)
	}
	uncertified := begin
	uncertified.EKCertificate = nil
	if _, _, err := trusted.Challenge(uncertified, "", "tok", now); !errors.Is(err, attestation.ErrRefused) {
		t.Fatalf("no EK certificate: %v", err)
	}
}
