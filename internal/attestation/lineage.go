package attestation

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// MethodLineage: a software key made by a process that, at the time, held
// the attested key of the parent agent, which signed the sub-agent's
// enrollment (its key, scope and lifetime). Depth counts the delegations
// from the last key in hardware.
const MethodLineage = "lineage"

// LineageStatement is what a parent signs to vouch for a sub-agent: the
// parent's certificate, the child's key, the scope and lifetime asked for.
type LineageStatement struct {
	ParentSerial string
	ChildKey     crypto.PublicKey
	Scope        string
	// TTL is requested_expires_in as sent ("" for the default).
	TTL string
}

func (s LineageStatement) bytes() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(s.ChildKey)
	if err != nil {
		return nil, fmt.Errorf("attestation: lineage: child key: %w", err)
	}
	sum := sha256.Sum256(der)
	return fmt.Appendf(nil, "bulkhead-lineage/v1\nparent=%s\nkey=%s\nscope=%s\nttl=%s\n",
		s.ParentSerial, hex.EncodeToString(sum[:]), s.Scope, s.TTL), nil
}

// SignLineage signs s with the parent's SVID key (in a TPM, the TPM signs).
func SignLineage(parent crypto.Signer, s LineageStatement) ([]byte, error) {
	msg, err := s.bytes()
	if err != nil {
		return nil, err
	}
	if _, ok := parent.Public().(ed25519.PublicKey); ok {
		return parent.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	sum := sha256.Sum256(msg)
	return parent.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// VerifyLineage checks that the key of parent signed s.
func VerifyLineage(parent *x509.Certificate, s LineageStatement, sig []byte) error {
	msg, err := s.bytes()
	if err != nil {
		return err
	}
	alg := x509.ECDSAWithSHA256
	switch parent.PublicKey.(type) {
	case ed25519.PublicKey:
		alg = x509.PureEd25519
	case interface{ Size() int }: // *rsa.PublicKey
		alg = x509.SHA256WithRSA
	}
	if err := parent.CheckSignature(alg, msg, sig); err != nil {
		return fmt.Errorf("%w: the lineage proof is not the parent's signature over this enrollment", ErrRefused)
	}
	return nil
}

// Child returns the claims a sub-agent inherits from its parent's: a
// lineage one step deeper from the parent's hardware key, or nothing if
// the parent's own key is not attested.
func (c Claims) Child() Claims {
	c = c.Normal()
	switch {
	case c.Protection == TPM || c.Protection == HSM:
		return Claims{Protection: Software, Method: MethodLineage, EK: c.EK, Depth: 1}
	case c.Method == MethodLineage:
		return Claims{Protection: Software, Method: MethodLineage, EK: c.EK, Depth: c.Depth + 1}
	}
	return Claims{}
}
