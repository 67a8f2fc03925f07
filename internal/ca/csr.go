package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrBadCSR is wrapped by every CSR and key rejection.
var ErrBadCSR = errors.New("bad certificate signing request")

// MinRSABits is the smallest RSA modulus accepted.
const MinRSABits = 2048

// CheckPublicKey accepts ECDSA P-256/P-384, Ed25519 and RSA of at least
// MinRSABits, and refuses everything else.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s is not accepted (use P-256 or P-384)", ErrBadCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: malformed Ed25519 key", ErrBadCSR)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("%w: RSA key of %d bits is too weak (minimum %d)", ErrBadCSR, k.N.BitLen(), MinRSABits)
		}
	case nil:
		return fmt.Errorf("%w: no public key", ErrBadCSR)
	default:
		return fmt.Errorf("%w: key type %T is not supported", ErrBadCSR, pub)
	}
	return nil
}

// MaxCSRSize bounds a PEM CSR; a real one is well under 2 KiB.
const MaxCSRSize = 16 << 10

// ParseCSR parses and checks a PEM certificate signing request for want.
//
// The CSR must carry a valid self-signature (proof that the requester holds
// the key) and an acceptable key. Its subject is ignored: the CA decides the
// certificate's identity. It may name no SAN at all, or exactly one URI SAN
// equal to want; a SAN for another identity, a second SAN of any kind, or an
// extension requesting CA powers is refused rather than silently dropped.
func ParseCSR(pemBytes []byte, want spiffeid.ID) (*x509.CertificateRequest, error) {
	if len(pemBytes) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadCSR)
	}
	if len(pemBytes) > MaxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes is over the %d-byte limit", ErrBadCSR, len(pemBytes), MaxCSRSize)
	}
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrBadCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrBadCSR, block.Type)
	}
	if len(pemBytesTrim(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the CSR", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %w", ErrBadCSR, err)
	}
	if err := CheckPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if n := len(csr.DNSNames) + len(csr.EmailAddresses) + len(csr.IPAddresses); n > 0 {
		return nil, fmt.Errorf("%w: only a SPIFFE URI SAN may be requested, found %d DNS/IP/email SANs", ErrBadCSR, n)
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		got, err := spiffeid.FromURI(csr.URIs[0])
		if err != nil {
			return nil, fmt.Errorf("%w: URI SAN %q is not a SPIFFE ID", ErrBadCSR, csr.URIs[0])
		}
		if got != want {
			return nil, fmt.Errorf("%w: CSR names %s but the caller is %s", ErrBadCSR, got, want)
		}
	default:
		return nil, fmt.Errorf("%w: %d URI SANs requested, at most one is allowed", ErrBadCSR, len(csr.URIs))
	}
	for _, ext := range csr.Extensions {
		// basicConstraints in a CSR can only be a request for CA powers.
		if ext.Id.Equal([]int{2, 5, 29, 19}) {
			return nil, fmt.Errorf("%w: basic constraints may not be requested", ErrBadCSR)
		}
	}
	return csr, nil
}

func pemBytesTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
