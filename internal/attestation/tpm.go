package attestation

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/bulkhead-dev/bulkhead/api"
)

// ErrRefused wraps every reason a TPM's proof is refused.
var ErrRefused = errors.New("attestation refused")

// ChallengeTTL is how long an agent has to answer a challenge: a quote
// over an older nonce is stale.
const ChallengeTTL = time.Minute

// Verifier checks TPM proofs.
type Verifier struct {
	// EKRoots, if set, are the TPM makers' CAs whose endorsement key
	// certificates are trusted for agents without a pinned EK.
	EKRoots *x509.CertPool
	// PCRs, if set, are the SHA-256 values that PCRs must hold.
	PCRs map[int][]byte
	// Rand defaults to crypto/rand.
	Rand io.Reader
}

// Session is a challenge's state, which the control plane seals into the
// challenge and reads back with the answer.
type Session struct {
	// Subject binds the session to whoever asked: a join token's hash or
	// the renewing certificate's serial.
	Subject   string    `json:"subject"`
	EK        string    `json:"ek"`
	Method    string    `json:"method"`
	AK        []byte    `json:"ak"`
	Secret    []byte    `json:"secret"`
	Nonce     []byte    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRefused}, args...)...)
}

// Challenge checks the endorsement key — pinned is the agent's registered
// EK hash, or "" to accept one certified by EKRoots — and the attestation
// key's creation proof, and returns the session and the challenge to send.
func (v Verifier) Challenge(req api.TPMBeginRequest, pinned, subject string, now time.Time) (Session, api.TPMChallenge, error) {
	ekPub, err := x509.ParsePKIXPublicKey(req.EKPublic)
	if err != nil {
		return Session{}, api.TPMChallenge{}, refuse("endorsement key: %v", err)
	}
	s := Session{Subject: subject, EK: EKHash(req.EKPublic), AK: req.AK.Public, ExpiresAt: now.Add(ChallengeTTL)}
	switch {
	case pinned != "":
		if subtle.ConstantTimeCompare([]byte(pinned), []byte(s.EK)) != 1 {
			return Session{}, api.TPMChallenge{}, refuse("endorsement key %s is not the one registered for this agent", s.EK)
		}
		s.Method = MethodEKPinned
	case v.EKRoots != nil:
		if err := v.checkEKCert(req.EKCertificate, ekPub, now); err != nil {
			return Session{}, api.TPMChallenge{}, err
		}
		s.Method = MethodEKCA
	default:
		return Session{}, api.TPMChallenge{}, refuse("no endorsement key is registered for this agent and no EK CA is trusted")
	}
	r := v.Rand
	if r == nil {
		r = rand.Reader
	}
	ap := attest.ActivationParameters{EK: ekPub, Rand: r, AK: attest.AttestationParameters{Public: req.AK.Public,
		CreateData: req.AK.CreateData, CreateAttestation: req.AK.CreateAttestation, CreateSignature: req.AK.CreateSignature}}
	secret, ec, err := ap.Generate()
	if err != nil {
		return Session{}, api.TPMChallenge{}, refuse("attestation key: %v", err)
	}
	s.Secret = secret
	s.Nonce = make([]byte, 32)
	if _, err := io.ReadFull(r, s.Nonce); err != nil {
		return Session{}, api.TPMChallenge{}, fmt.Errorf("attestation: nonce: %w", err)
	}
	ch := api.TPMChallenge{Credential: ec.Credential, Secret: ec.Secret, Nonce: s.Nonce}
	for i := range v.PCRs {
		ch.PCRs = append(ch.PCRs, i)
	}
	slices.Sort(ch.PCRs)
	return s, ch, nil
}

func (v Verifier) checkEKCert(der []byte, ekPub crypto.PublicKey, now time.Time) error {
	if len(der) == 0 {
		return refuse("the TPM shows no endorsement key certificate and none is pinned for this agent")
	}
	cert, err := attest.ParseEKCertificate(der)
	if err != nil {
		return refuse("endorsement key certificate: %v", err)
	}
	if k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(ekPub) {
		return refuse("the endorsement key certificate is for another key")
	}
	// EK certificates name the TPM in a critical subject alternative name
	// of directory names (TCG EK Credential Profile) and may carry subject
	// directory attributes, both of which Go leaves unhandled; and they
	// carry TCG key usages Go does not know. The chain to the maker's CA
	// is what matters here.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, func(id asn1.ObjectIdentifier) bool {
		return id.Equal(oidSAN) || id.Equal(oidSubjectDirectoryAttributes)
	})
	_, err = cert.Verify(x509.VerifyOptions{Roots: v.EKRoots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return refuse("endorsement key certificate: %v", err)
	}
	return nil
}

var (
	oidSAN                        = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDirectoryAttributes = asn1.ObjectIdentifier{2, 5, 29, 9}
)

// Verify checks an answer to s at now: the activated credential proves the
// attestation key shares a TPM with the endorsement key; the quote, signed
// by that key over the nonce, gives PCRs within the policy; and the new
// key's certification, by the same key over the same nonce, shows a key the
// TPM created and cannot export. It returns that key.
func (v Verifier) Verify(s Session, fin api.TPMFinishRequest, now time.Time) (crypto.PublicKey, error) {
	if !now.Before(s.ExpiresAt) {
		return nil, refuse("the challenge expired at %s", s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if subtle.ConstantTimeCompare(s.Secret, fin.Activated) != 1 {
		return nil, refuse("the credential was not activated by the TPM holding the endorsement key")
	}
	ak, err := attest.ParseAKPublic(s.AK)
	if err != nil {
		return nil, refuse("attestation key: %v", err)
	}
	pcrs := make([]attest.PCR, 0, len(fin.PCRs))
	seen := map[int]bool{}
	for _, p := range fin.PCRs {
		// One value per PCR: the quote check keeps the last of a repeated
		// index and the policy check would read the first.
		if p.Index < 0 || p.Index > 23 || seen[p.Index] {
			return nil, refuse("PCR %d is listed twice or does not exist", p.Index)
		}
		seen[p.Index] = true
		pcrs = append(pcrs, attest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: crypto.SHA256})
	}
	if len(pcrs) == 0 {
		return nil, refuse("the answer has no PCR values")
	}
	if err := ak.VerifyAll([]attest.Quote{{Quote: fin.Quote, Signature: fin.QuoteSignature}}, pcrs, s.Nonce); err != nil {
		return nil, refuse("quote: %v", err)
	}
	for i, want := range v.PCRs {
		j := slices.IndexFunc(pcrs, func(p attest.PCR) bool { return p.Index == i })
		if j < 0 || !bytes.Equal(pcrs[j].Digest, want) {
			return nil, refuse("PCR %d is outside the policy", i)
		}
	}
	cp := attest.CertificationParameters{Public: fin.Key.Public, CreateAttestation: fin.Key.CreateAttestation, CreateSignature: fin.Key.CreateSignature}
	if err := cp.Verify(attest.VerifyOpts{Public: ak.Public, Hash: ak.Hash}); err != nil {
		return nil, refuse("key certification: %v", err)
	}
	att, err := tpm2.DecodeAttestationData(fin.Key.CreateAttestation)
	if err != nil {
		return nil, refuse("key certification: %v", err)
	}
	if subtle.ConstantTimeCompare(att.ExtraData, s.Nonce) != 1 {
		return nil, refuse("the key was certified over another nonce")
	}
	pub, err := tpm2.DecodePublic(fin.Key.Public)
	if err != nil {
		return nil, refuse("key: %v", err)
	}
	key, err := pub.Key()
	if err != nil {
		return nil, refuse("key: %v", err)
	}
	return key, nil
}
