// Package attestation is what the control plane has proven about where an
// agent's key lives, and the check of a TPM's proof of it.
//
// Claims travel with the identity: the SVID carries them (certificate
// policies and the subject's serial number, see ca.SVIDRequest), the
// access token as its "att" claim, the PDP as principal.attestation, and
// every record of the agent's decisions names them.
package attestation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Key protection levels.
const (
	Software = "software"
	TPM      = "tpm"
	HSM      = "hsm"
)

// Attestation methods.
const (
	// MethodNone: the key was not attested (a CSR from a join token).
	MethodNone = "none"
	// MethodEKPinned: the TPM's endorsement key was registered with the
	// agent by an operator.
	MethodEKPinned = "tpm-ek-pinned"
	// MethodEKCA: the endorsement key's certificate chains to a TPM
	// maker's CA the operator trusts.
	MethodEKCA = "tpm-ek-ca"
)

// Claims is what was proven about an SVID's key. The zero value is an
// unattested software key.
type Claims struct {
	Protection string `json:"protection"`
	Method     string `json:"method"`
	// EK is "sha256:HEX" of the endorsement key (PKIX DER) of the TPM the
	// key lives in.
	EK string `json:"ek,omitempty"`
	// Depth is, for MethodLineage, the number of delegations from the
	// agent whose key is in hardware (1 for its sub-agent).
	Depth int `json:"depth,omitempty"`
}

// Normal returns c with the zero value's fields filled in.
func (c Claims) Normal() Claims {
	if c.Protection == "" {
		c.Protection = Software
	}
	if c.Method == "" {
		c.Method = MethodNone
	}
	return c
}

// String is the form records use: "tpm/tpm-ek-pinned", or
// "software/lineage/2" for a lineage.
func (c Claims) String() string {
	c = c.Normal()
	if c.Method == MethodLineage {
		return fmt.Sprintf("%s/%s/%d", c.Protection, c.Method, c.Depth)
	}
	return c.Protection + "/" + c.Method
}

func nameOf(table map[string]int, n string) string {
	for name, v := range table {
		if strconv.Itoa(v) == n {
			return name
		}
	}
	return ""
}

// EKHash is the "sha256:HEX" name of an endorsement key's PKIX DER.
func EKHash(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseEKPin normalizes an operator's EK pin: "sha256:HEX" or bare HEX.
func ParseEKPin(s string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("attestation: EK pin %q is not sha256:HEX of the endorsement key", s)
	}
	return "sha256:" + h, nil
}

// The SVID states its claims as certificate policies, as AD CS key
// attestation does: one policy names the protection, one the method, under
// a UUID arc of ours (2.25.UUID, RFC 9834's way to name without a
// registry). The endorsement key's hash is the subject's serial number:
// the TPM is the device the key is in.
const policyRoot = "2.25.246650927672234310959417089424903841685" // b98f3da1-3be3-4d41-9a2c-1a52d2532795

var protectionArc = map[string]int{Software: 1, TPM: 2, HSM: 3}
var methodArc = map[string]int{MethodNone: 1, MethodEKPinned: 2, MethodEKCA: 3, MethodLineage: 4}

// maxDepth bounds the lineage depth a certificate can state.
const maxDepth = 16

// Policies returns the certificate policies that state c.
func Policies(c Claims) ([]x509.OID, error) {
	c = c.Normal()
	p, ok := protectionArc[c.Protection]
	m, ok2 := methodArc[c.Method]
	if !ok || !ok2 {
		return nil, fmt.Errorf("attestation: unknown protection %q or method %q", c.Protection, c.Method)
	}
	po, err := x509.ParseOID(fmt.Sprintf("%s.1.%d", policyRoot, p))
	if err != nil {
		return nil, err
	}
	mo, err := x509.ParseOID(fmt.Sprintf("%s.2.%d", policyRoot, m))
	if err != nil {
		return nil, err
	}
	out := []x509.OID{po, mo}
	if c.Method == MethodLineage {
		if c.Depth < 1 || c.Depth > maxDepth {
			return nil, fmt.Errorf("attestation: lineage depth %d is outside 1-%d", c.Depth, maxDepth)
		}
		do, err := x509.ParseOID(fmt.Sprintf("%s.3.%d", policyRoot, c.Depth))
		if err != nil {
			return nil, err
		}
		out = append(out, do)
	}
	return out, nil
}

// SubjectSerial is the subject serial number that names c's TPM, or "".
func SubjectSerial(c Claims) string {
	return strings.TrimPrefix(c.EK, "sha256:")
}

// FromCertificate reads the claims an SVID states. A certificate without
// them is an unattested software key.
func FromCertificate(cert *x509.Certificate) Claims {
	var c Claims
	for _, oid := range cert.Policies {
		s := oid.String()
		rest, ok := strings.CutPrefix(s, policyRoot+".")
		if !ok {
			continue
		}
		kind, n, _ := strings.Cut(rest, ".")
		switch kind {
		case "1":
			c.Protection = nameOf(protectionArc, n)
		case "2":
			c.Method = nameOf(methodArc, n)
		case "3":
			if d, err := strconv.Atoi(n); err == nil && d >= 1 && d <= maxDepth {
				c.Depth = d
			}
		}
	}
	if c.Method != MethodLineage {
		c.Depth = 0
	}
	if sn := cert.Subject.SerialNumber; sn != "" && (c.Protection == TPM || c.Method == MethodLineage) {
		c.EK = "sha256:" + sn
	}
	return c.Normal()
}
