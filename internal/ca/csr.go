package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
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
// equal to want; a SAN for another identity or a second SAN of any kind is
// refused rather than silently dropped.
//
// A CSR may request only what Bulkhead sets on a leaf SVID anyway (see
// Authority.SignSVID), so a request is either redundant or refused, never
// quietly cut: subjectAltName (as above), keyUsage with at most
// digitalSignature, extKeyUsage with at most serverAuth and clientAuth, and
// basicConstraints saying CA:false with no path length (what openssl's
// v3_req section asks). Any other extension, critical or not — CA powers,
// keyCertSign, name constraints, policies, AIA, CRL distribution points,
// subjectKeyIdentifier (a leaf SVID carries none), private OIDs — or an
// extension requested twice or whose value does not parse, is refused with
// an error naming it.
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
	if err := checkExtensions(csr.Extensions); err != nil {
		return nil, err
	}
	return csr, nil
}

func pemBytesTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// Extensions a CSR may request (RFC 5280 §4.2.1): those SignSVID sets.
var (
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)

// extensionNames names the extensions a refusal is most likely to be about,
// so the message says what was asked for, not only an OID.
var extensionNames = map[string]string{
	"2.5.29.9":                 "subjectDirectoryAttributes",
	"2.5.29.14":                "subjectKeyIdentifier",
	"2.5.29.15":                "keyUsage",
	"2.5.29.16":                "privateKeyUsagePeriod",
	"2.5.29.17":                "subjectAltName",
	"2.5.29.18":                "issuerAltName",
	"2.5.29.19":                "basicConstraints",
	"2.5.29.30":                "nameConstraints",
	"2.5.29.31":                "cRLDistributionPoints",
	"2.5.29.32":                "certificatePolicies",
	"2.5.29.33":                "policyMappings",
	"2.5.29.35":                "authorityKeyIdentifier",
	"2.5.29.36":                "policyConstraints",
	"2.5.29.37":                "extKeyUsage",
	"2.5.29.46":                "freshestCRL",
	"2.5.29.54":                "inhibitAnyPolicy",
	"1.3.6.1.5.5.7.1.1":        "authorityInfoAccess",
	"1.3.6.1.5.5.7.1.11":       "subjectInfoAccess",
	"1.3.6.1.5.5.7.1.24":       "tlsFeature",
	"1.3.6.1.4.1.11129.2.4.2":  "signedCertificateTimestampList",
	"1.3.6.1.4.1.11129.2.4.3":  "precertificatePoison",
	"2.16.840.1.113730.1.1":    "netscapeCertType",
	"2.16.840.1.113730.1.13":   "netscapeComment",
	"1.3.6.1.4.1.311.20.2":     "microsoftCertificateTemplateName",
	"1.3.6.1.4.1.311.21.7":     "microsoftCertificateTemplate",
	"1.3.6.1.4.1.311.21.10":    "microsoftApplicationPolicies",
	"1.2.840.113533.7.65.0":    "entrustVersionInfo",
	"1.3.6.1.5.5.7.1.26":       "tnAuthList",
	"1.3.6.1.4.1.11129.2.1.17": "androidKeyAttestation",
}

// extensionName renders an extension's OID for a message: "nameConstraints
// (2.5.29.30)", or the bare OID when it has no well-known name.
func extensionName(id asn1.ObjectIdentifier) string {
	if n, ok := extensionNames[id.String()]; ok {
		return n + " (" + id.String() + ")"
	}
	return id.String()
}

// checkExtensions refuses every requested extension that SignSVID does not
// set with the same value. Nothing from a CSR is copied into a certificate,
// so a request beyond that would be silently dropped; refusing it instead
// tells the requester (and the audit log) that it asked for more than it
// can get, which from a compromised agent is a signal worth keeping.
func checkExtensions(exts []pkix.Extension) error {
	seen := make(map[string]bool, len(exts))
	for _, ext := range exts {
		name := extensionName(ext.Id)
		// x509.ParseCertificateRequest already refuses duplicates; a second
		// copy must never be able to override the one checked here.
		if seen[ext.Id.String()] {
			return fmt.Errorf("%w: CSR requests extension %s more than once", ErrBadCSR, name)
		}
		seen[ext.Id.String()] = true
		var err error
		switch {
		case ext.Id.Equal(oidSubjectAltName):
			err = checkSANTypes(ext.Value)
		case ext.Id.Equal(oidKeyUsage):
			err = checkKeyUsage(ext.Value)
		case ext.Id.Equal(oidExtKeyUsage):
			err = checkExtKeyUsage(ext.Value)
		case ext.Id.Equal(oidBasicConstraints):
			err = checkBasicConstraints(ext.Value)
		default:
			crit := ""
			if ext.Critical {
				crit = "critical "
			}
			return fmt.Errorf("%w: CSR requests %sextension %s, which Bulkhead does not set", ErrBadCSR, crit, name)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadCSR, err)
		}
	}
	return nil
}

// derSequence returns the elements of a DER SEQUENCE that must fill b
// exactly. encoding/asn1 refuses indefinite and non-minimal lengths.
func derSequence(b []byte) ([]asn1.RawValue, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(b, &seq)
	switch {
	case err != nil:
		return nil, err
	case len(rest) != 0:
		return nil, errors.New("trailing data")
	case seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound:
		return nil, errors.New("not a SEQUENCE")
	}
	var out []asn1.RawValue
	for body := seq.Bytes; len(body) > 0; {
		var el asn1.RawValue
		if body, err = asn1.Unmarshal(body, &el); err != nil {
			return nil, err
		}
		out = append(out, el)
	}
	return out, nil
}

func malformed(id asn1.ObjectIdentifier, err error) error {
	return fmt.Errorf("CSR's %s extension is malformed: %w", extensionName(id), err)
}

// generalNameTypes names the GeneralName choices (RFC 5280 §4.2.1.6) by
// their context tag.
var generalNameTypes = [...]string{"otherName", "rfc822Name", "dNSName", "x400Address",
	"directoryName", "ediPartyName", "uniformResourceIdentifier", "iPAddress", "registeredID"}

const generalNameURI = 6

// checkSANTypes refuses SAN kinds that x509.ParseCertificateRequest drops
// without a word (otherName, directoryName, registeredID, ...): only a URI
// may be requested. DNS, IP, email and the URI itself are checked by
// ParseCSR on the parsed fields.
func checkSANTypes(v []byte) error {
	names, err := derSequence(v)
	if err != nil {
		return malformed(oidSubjectAltName, err)
	}
	if len(names) == 0 {
		return malformed(oidSubjectAltName, errors.New("no names"))
	}
	for _, n := range names {
		if n.Class != asn1.ClassContextSpecific || n.Tag >= len(generalNameTypes) {
			return malformed(oidSubjectAltName, fmt.Errorf("unknown name type (class %d, tag %d)", n.Class, n.Tag))
		}
		if n.Tag != generalNameURI {
			return fmt.Errorf("only a SPIFFE URI SAN may be requested, found a %s SAN", generalNameTypes[n.Tag])
		}
	}
	return nil
}

// keyUsageBits names the keyUsage bits (RFC 5280 §4.2.1.3) in bit order.
var keyUsageBits = [...]string{"digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
	"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}

// checkKeyUsage allows digitalSignature alone, the only bit SignSVID sets
// (for every key type: an SVID's key signs TLS handshakes and JWTs and
// never encrypts, so RSA keys get no keyEncipherment either).
func checkKeyUsage(v []byte) error {
	var bits asn1.BitString
	rest, err := asn1.Unmarshal(v, &bits)
	switch {
	case err != nil:
		return malformed(oidKeyUsage, err)
	case len(rest) != 0:
		return malformed(oidKeyUsage, errors.New("trailing data"))
	}
	set := false
	for i := range bits.BitLength {
		if bits.At(i) == 0 {
			continue
		}
		set = true
		if i == 0 {
			continue
		}
		name := fmt.Sprintf("bit %d", i)
		if i < len(keyUsageBits) {
			name = keyUsageBits[i]
		}
		return fmt.Errorf("CSR requests key usage %s in %s; Bulkhead sets only digitalSignature", name, extensionName(oidKeyUsage))
	}
	if !set {
		// RFC 5280: when the extension is present, at least one bit is set.
		return malformed(oidKeyUsage, errors.New("no bits set"))
	}
	return nil
}

// extKeyUsages names the key purposes a refusal is likely to be about.
var extKeyUsages = map[string]string{
	"2.5.29.37.0":        "anyExtendedKeyUsage",
	"1.3.6.1.5.5.7.3.1":  "serverAuth",
	"1.3.6.1.5.5.7.3.2":  "clientAuth",
	"1.3.6.1.5.5.7.3.3":  "codeSigning",
	"1.3.6.1.5.5.7.3.4":  "emailProtection",
	"1.3.6.1.5.5.7.3.5":  "ipsecEndSystem",
	"1.3.6.1.5.5.7.3.6":  "ipsecTunnel",
	"1.3.6.1.5.5.7.3.7":  "ipsecUser",
	"1.3.6.1.5.5.7.3.8":  "timeStamping",
	"1.3.6.1.5.5.7.3.9":  "OCSPSigning",
	"1.3.6.1.5.5.7.3.17": "ipsecIKE",
}

// checkExtKeyUsage allows serverAuth and clientAuth, the purposes SignSVID
// sets; anything else (code signing, OCSP signing, anyExtendedKeyUsage) is
// refused.
func checkExtKeyUsage(v []byte) error {
	els, err := derSequence(v)
	if err != nil {
		return malformed(oidExtKeyUsage, err)
	}
	if len(els) == 0 {
		return malformed(oidExtKeyUsage, errors.New("no key purposes"))
	}
	for _, el := range els {
		var oid asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(el.FullBytes, &oid); err != nil || len(rest) != 0 {
			return malformed(oidExtKeyUsage, fmt.Errorf("key purpose is not an OID: %v", err))
		}
		switch name := extKeyUsages[oid.String()]; name {
		case "serverAuth", "clientAuth":
		case "":
			return fmt.Errorf("CSR requests extended key usage %s in %s; Bulkhead sets only serverAuth and clientAuth", oid, extensionName(oidExtKeyUsage))
		default:
			return fmt.Errorf("CSR requests extended key usage %s (%s) in %s; Bulkhead sets only serverAuth and clientAuth", name, oid, extensionName(oidExtKeyUsage))
		}
	}
	return nil
}

// checkBasicConstraints allows CA:false without a path length: that is what
// SignSVID sets, and what openssl's v3_req section asks for, so refusing it
// would only break well-behaved tools. CA:true is a request for CA powers;
// a path length means nothing on a leaf and is refused as a request for
// something Bulkhead does not set.
//
//	BasicConstraints ::= SEQUENCE {
//	     cA                      BOOLEAN DEFAULT FALSE,
//	     pathLenConstraint       INTEGER (0..MAX) OPTIONAL }
func checkBasicConstraints(v []byte) error {
	els, err := derSequence(v)
	if err != nil {
		return malformed(oidBasicConstraints, err)
	}
	if len(els) > 0 && els[0].Class == asn1.ClassUniversal && els[0].Tag == asn1.TagBoolean {
		var isCA bool
		if _, err := asn1.Unmarshal(els[0].FullBytes, &isCA); err != nil {
			return malformed(oidBasicConstraints, err)
		}
		if isCA {
			return fmt.Errorf("CSR requests CA powers (%s with CA:true); Bulkhead issues only leaf certificates", extensionName(oidBasicConstraints))
		}
		els = els[1:]
	}
	switch {
	case len(els) == 0:
		return nil
	case len(els) == 1 && els[0].Class == asn1.ClassUniversal && els[0].Tag == asn1.TagInteger:
		return fmt.Errorf("CSR requests a path length in %s, which Bulkhead does not set", extensionName(oidBasicConstraints))
	}
	return malformed(oidBasicConstraints, errors.New("unexpected fields"))
}
