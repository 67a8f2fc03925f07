package attestation_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
)

// FuzzTPMProof feeds hostile bytes to every field an agent sends: the
// endorsement key and its certificate, the attestation key's public area
// and creation proof, the quote, the PCRs and the key's certification.
// Nothing may panic, and nothing but refusals may come out.
func FuzzTPMProof(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ekDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ekDER, []byte{0, 1}, []byte{}, []byte{0xff, 0x54, 0x43, 0x47}, []byte{0, 0x18}, []byte{0, 0x23, 0, 0x0b}, []byte{})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, []byte{0x80, 0x02}, []byte{1}, []byte{}, []byte{}, []byte{}, []byte{0})
	f.Fuzz(func(t *testing.T, ek, akPublic, akCreateData, attestBytes, sig, keyPublic, pcr []byte) {
		v := attestation.Verifier{PCRs: map[int][]byte{0: make([]byte, 32)}}
		begin := api.TPMBeginRequest{EKPublic: ek, EKCertificate: pcr, AK: api.TPMAttestationKey{Public: akPublic,
			CreateData: akCreateData, CreateAttestation: attestBytes, CreateSignature: sig}}
		if _, _, err := v.Challenge(begin, attestation.EKHash(ek), "s", t0); err == nil {
			t.Fatalf("a challenge for an attestation key made of fuzz: %x", akPublic)
		}
		s := attestation.Session{Subject: "s", AK: akPublic, Secret: []byte("secret"), Nonce: []byte("nonce"), ExpiresAt: t0.Add(attestation.ChallengeTTL)}
		fin := api.TPMFinishRequest{Activated: []byte("secret"), Quote: attestBytes, QuoteSignature: sig,
			PCRs: []api.TPMPCR{{Index: 0, Digest: pcr}}, Key: api.TPMAttestationKey{Public: keyPublic, CreateAttestation: attestBytes, CreateSignature: sig}}
		if _, err := v.Verify(s, fin, t0); err == nil {
			t.Fatal("a proof made of fuzz was accepted")
		}
	})
}
