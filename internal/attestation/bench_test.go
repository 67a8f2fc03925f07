package attestation_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/attestation"
)

// BenchmarkAttestedEnrollment is one enrollment's TPM work and checks:
// the agent's side (attestation key, activation, quote, key creation and
// certification, against swtpm) and the control plane's (challenge and
// verification), beside the software key a plain enrollment makes.
func BenchmarkAttestedEnrollment(b *testing.B) {
	tp := benchDevice(b)
	v := attestation.Verifier{}
	b.Run("software-key", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tpm-attested", func(b *testing.B) {
		for b.Loop() {
			p, begin, err := tp.Begin()
			if err != nil {
				b.Fatal(err)
			}
			s, ch, err := v.Challenge(begin, attestation.EKHash(begin.EKPublic), "tok", t0)
			if err != nil {
				b.Fatal(err)
			}
			fin, key, err := p.Answer(ch)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := v.Verify(s, fin, t0); err != nil {
				b.Fatal(err)
			}
			_ = key.Close()
			_ = p.Close()
		}
	})
}

// BenchmarkSign is one ECDSA P-256 signature (what each mTLS handshake
// costs the agent) with the key in the TPM (swtpm) and in memory.
func BenchmarkSign(b *testing.B) {
	tp := benchDevice(b)
	p, begin, err := tp.Begin()
	if err != nil {
		b.Fatal(err)
	}
	_, ch, err := attestation.Verifier{}.Challenge(begin, attestation.EKHash(begin.EKPublic), "tok", t0)
	if err != nil {
		b.Fatal(err)
	}
	_, key, err := p.Answer(ch)
	if err != nil {
		b.Fatal(err)
	}
	_ = p.Close()
	defer key.Close()
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("handshake transcript"))
	for name, k := range map[string]crypto.Signer{"software": soft, "tpm": key} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
