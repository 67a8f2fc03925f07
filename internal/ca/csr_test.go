package ca_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
)

// ext builds a requested extension with a DER value.
func ext(oid asn1.ObjectIdentifier, critical bool, value []byte) pkix.Extension {
	return pkix.Extension{Id: oid, Critical: critical, Value: value}
}

func mustDER(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyUsage encodes a keyUsage BIT STRING with the given bits set (bit 0 is
// digitalSignature, 5 keyCertSign).
func keyUsage(t testing.TB, bits ...int) []byte {
	t.Helper()
	n := 0
	for _, b := range bits {
		n = max(n, b+1)
	}
	bs := asn1.BitString{Bytes: make([]byte, (n+7)/8), BitLength: n}
	for _, b := range bits {
		bs.Bytes[b/8] |= 0x80 >> (b % 8)
	}
	return mustDER(t, bs)
}

// generalNames encodes a SubjectAltName value from raw GeneralNames.
func generalNames(t testing.TB, names ...asn1.RawValue) []byte {
	t.Helper()
	return mustDER(t, names)
}

func uriName(s string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(s)}
}

var (
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKU           = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidEKU          = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBC           = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSKI          = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAKI          = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidNameConstr   = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidPolicies     = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidCRLDP        = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidAIA          = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidPrivate      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}
	oidServerAuth   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	oidCodeSigning  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}
	oidAnyEKU       = asn1.ObjectIdentifier{2, 5, 29, 37, 0}
	emptySequence   = []byte{0x30, 0x00}
	explicitCAFalse = []byte{0x30, 0x03, 0x01, 0x01, 0x00}
)

// TestParseCSRExtensions: a CSR may request only what a leaf SVID gets
// anyway; everything else is refused, naming the extension.
func TestParseCSRExtensions(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const bad = "bad certificate signing request: "
	nameConstraints := mustDER(t, struct {
		Permitted []asn1.RawValue `asn1:"optional,tag:0"`
	}{[]asn1.RawValue{{FullBytes: mustDER(t, struct {
		Base asn1.RawValue
	}{asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("evil.example")}})}}})
	dirName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true,
		Bytes: mustDER(t, pkix.Name{CommonName: "root"}.ToRDNSequence())}
	otherName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
		Bytes: append(mustDER(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}),
			mustDER(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: mustDER(t, "admin@corp")})...)}

	cases := []struct {
		name string
		key  crypto.Signer // nil means a fresh P-256 key
		uris []*url.URL
		exts []pkix.Extension
		want string // the error, or its start when asn1 adds detail; "" means accepted
	}{
		// Requests Bulkhead grants anyway.
		{"keyUsage digitalSignature", nil, nil, []pkix.Extension{ext(oidKU, true, keyUsage(t, 0))}, ""},
		{"extKeyUsage serverAuth and clientAuth", nil, nil, []pkix.Extension{ext(oidEKU, false, mustDER(t, []asn1.ObjectIdentifier{oidServerAuth, oidClientAuth}))}, ""},
		{"extKeyUsage clientAuth", nil, nil, []pkix.Extension{ext(oidEKU, false, mustDER(t, []asn1.ObjectIdentifier{oidClientAuth}))}, ""},
		{"basicConstraints CA:false (openssl v3_req)", nil, nil, []pkix.Extension{ext(oidBC, false, emptySequence)}, ""},
		{"basicConstraints with an explicit CA:false", nil, nil, []pkix.Extension{ext(oidBC, true, explicitCAFalse)}, ""},
		{"everything a leaf SVID gets", nil, []*url.URL{alpha.URL()}, []pkix.Extension{
			ext(oidBC, true, emptySequence), ext(oidKU, true, keyUsage(t, 0)),
			ext(oidEKU, false, mustDER(t, []asn1.ObjectIdentifier{oidServerAuth, oidClientAuth}))}, ""},

		// Requests for authority.
		{"keyUsage keyCertSign", nil, nil, []pkix.Extension{ext(oidKU, true, keyUsage(t, 0, 5))},
			bad + "CSR requests key usage keyCertSign in keyUsage (2.5.29.15); Bulkhead sets only digitalSignature"},
		{"keyUsage cRLSign", nil, nil, []pkix.Extension{ext(oidKU, true, keyUsage(t, 6))},
			bad + "CSR requests key usage cRLSign in keyUsage (2.5.29.15); Bulkhead sets only digitalSignature"},
		{"keyUsage keyEncipherment for an RSA key", rsaKey, nil, []pkix.Extension{ext(oidKU, true, keyUsage(t, 0, 2))},
			bad + "CSR requests key usage keyEncipherment in keyUsage (2.5.29.15); Bulkhead sets only digitalSignature"},
		{"keyUsage of openssl's full v3_req", nil, nil, []pkix.Extension{ext(oidKU, false, keyUsage(t, 0, 1, 2))},
			bad + "CSR requests key usage nonRepudiation in keyUsage (2.5.29.15); Bulkhead sets only digitalSignature"},
		{"keyUsage bit past decipherOnly", nil, nil, []pkix.Extension{ext(oidKU, false, keyUsage(t, 0, 12))},
			bad + "CSR requests key usage bit 12 in keyUsage (2.5.29.15); Bulkhead sets only digitalSignature"},
		{"basicConstraints CA:true", nil, nil, []pkix.Extension{basicConstraintsCA()},
			bad + "CSR requests CA powers (basicConstraints (2.5.29.19) with CA:true); Bulkhead issues only leaf certificates"},
		{"basicConstraints CA:true with a path length", nil, nil, []pkix.Extension{ext(oidBC, true, []byte{0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00})},
			bad + "CSR requests CA powers (basicConstraints (2.5.29.19) with CA:true); Bulkhead issues only leaf certificates"},
		{"basicConstraints CA:false with a path length", nil, nil, []pkix.Extension{ext(oidBC, true, []byte{0x30, 0x03, 0x02, 0x01, 0x00})},
			bad + "CSR requests a path length in basicConstraints (2.5.29.19), which Bulkhead does not set"},
		{"extKeyUsage codeSigning", nil, nil, []pkix.Extension{ext(oidEKU, false, mustDER(t, []asn1.ObjectIdentifier{oidClientAuth, oidCodeSigning}))},
			bad + "CSR requests extended key usage codeSigning (1.3.6.1.5.5.7.3.3) in extKeyUsage (2.5.29.37); Bulkhead sets only serverAuth and clientAuth"},
		{"extKeyUsage anyExtendedKeyUsage", nil, nil, []pkix.Extension{ext(oidEKU, false, mustDER(t, []asn1.ObjectIdentifier{oidAnyEKU}))},
			bad + "CSR requests extended key usage anyExtendedKeyUsage (2.5.29.37.0) in extKeyUsage (2.5.29.37); Bulkhead sets only serverAuth and clientAuth"},
		{"extKeyUsage private purpose", nil, nil, []pkix.Extension{ext(oidEKU, false, mustDER(t, []asn1.ObjectIdentifier{oidPrivate}))},
			bad + "CSR requests extended key usage 1.3.6.1.4.1.55555.1 in extKeyUsage (2.5.29.37); Bulkhead sets only serverAuth and clientAuth"},
		{"nameConstraints", nil, nil, []pkix.Extension{ext(oidNameConstr, true, nameConstraints)},
			bad + "CSR requests critical extension nameConstraints (2.5.29.30), which Bulkhead does not set"},
		{"certificatePolicies", nil, nil, []pkix.Extension{ext(oidPolicies, false, mustDER(t, []struct{ Policy asn1.ObjectIdentifier }{{asn1.ObjectIdentifier{2, 5, 29, 32, 0}}}))},
			bad + "CSR requests extension certificatePolicies (2.5.29.32), which Bulkhead does not set"},
		{"authorityInfoAccess", nil, nil, []pkix.Extension{ext(oidAIA, false, emptySequence)},
			bad + "CSR requests extension authorityInfoAccess (1.3.6.1.5.5.7.1.1), which Bulkhead does not set"},
		{"cRLDistributionPoints", nil, nil, []pkix.Extension{ext(oidCRLDP, false, emptySequence)},
			bad + "CSR requests extension cRLDistributionPoints (2.5.29.31), which Bulkhead does not set"},
		// A leaf SVID carries no subjectKeyIdentifier (Go adds one only to
		// CA certificates), so asking for one asks for something absent.
		{"subjectKeyIdentifier", nil, nil, []pkix.Extension{ext(oidSKI, false, mustDER(t, []byte{1, 2, 3, 4}))},
			bad + "CSR requests extension subjectKeyIdentifier (2.5.29.14), which Bulkhead does not set"},
		{"authorityKeyIdentifier", nil, nil, []pkix.Extension{ext(oidAKI, false, emptySequence)},
			bad + "CSR requests extension authorityKeyIdentifier (2.5.29.35), which Bulkhead does not set"},
		{"private OID", nil, nil, []pkix.Extension{ext(oidPrivate, false, mustDER(t, "hello"))},
			bad + "CSR requests extension 1.3.6.1.4.1.55555.1, which Bulkhead does not set"},
		{"critical unknown extension", nil, nil, []pkix.Extension{ext(asn1.ObjectIdentifier{1, 2, 3, 4, 5}, true, []byte{0x05, 0x00})},
			bad + "CSR requests critical extension 1.2.3.4.5, which Bulkhead does not set"},

		// SANs Go's parser would drop without a word.
		{"directoryName SAN", nil, nil, []pkix.Extension{ext(oidSAN, false, generalNames(t, dirName))},
			bad + "only a SPIFFE URI SAN may be requested, found a directoryName SAN"},
		{"otherName SAN beside the own URI", nil, nil, []pkix.Extension{ext(oidSAN, false, generalNames(t, uriName(alpha.String()), otherName))},
			bad + "only a SPIFFE URI SAN may be requested, found a otherName SAN"},
		{"registeredID SAN", nil, nil, []pkix.Extension{ext(oidSAN, false, generalNames(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}}))},
			bad + "only a SPIFFE URI SAN may be requested, found a registeredID SAN"},
		{"own URI SAN as an explicit extension", nil, nil, []pkix.Extension{ext(oidSAN, false, generalNames(t, uriName(alpha.String())))}, ""},
		{"duplicate SAN extension", nil, nil, []pkix.Extension{
			ext(oidSAN, false, generalNames(t, uriName("spiffe://bulkhead.local/agent/beta"))),
			ext(oidSAN, false, generalNames(t, uriName(alpha.String())))},
			bad + "x509: certificate request contains duplicate requested extensions"},
		{"duplicate keyUsage extension", nil, nil, []pkix.Extension{ext(oidKU, false, keyUsage(t, 0)), ext(oidKU, false, keyUsage(t, 5))},
			bad + "x509: certificate request contains duplicate requested extensions"},

		// Values that do not parse.
		{"empty SAN", nil, nil, []pkix.Extension{ext(oidSAN, false, emptySequence)},
			bad + "CSR's subjectAltName (2.5.29.17) extension is malformed: no names"},
		{"SAN of a universal type", nil, nil, []pkix.Extension{ext(oidSAN, false, mustDER(t, []string{"x"}))},
			bad + "CSR's subjectAltName (2.5.29.17) extension is malformed: unknown name type (class 0, tag 19)"},
		{"keyUsage with no bits", nil, nil, []pkix.Extension{ext(oidKU, false, mustDER(t, asn1.BitString{}))},
			bad + "CSR's keyUsage (2.5.29.15) extension is malformed: no bits set"},
		{"keyUsage with bad padding", nil, nil, []pkix.Extension{ext(oidKU, false, []byte{0x03, 0x02, 0x07, 0x81})},
			bad + "CSR's keyUsage (2.5.29.15) extension is malformed: asn1: syntax error: invalid padding bits"},
		{"keyUsage with trailing data", nil, nil, []pkix.Extension{ext(oidKU, false, append(keyUsage(t, 0), 0))},
			bad + "CSR's keyUsage (2.5.29.15) extension is malformed: trailing data"},
		{"keyUsage that is not a BIT STRING", nil, nil, []pkix.Extension{ext(oidKU, false, []byte{0x04, 0x01, 0x80})},
			bad + "CSR's keyUsage (2.5.29.15) extension is malformed: asn1: structure error: tags don't match"},
		{"empty extKeyUsage", nil, nil, []pkix.Extension{ext(oidEKU, false, emptySequence)},
			bad + "CSR's extKeyUsage (2.5.29.37) extension is malformed: no key purposes"},
		{"extKeyUsage holding a string", nil, nil, []pkix.Extension{ext(oidEKU, false, mustDER(t, []string{"serverAuth"}))},
			bad + "CSR's extKeyUsage (2.5.29.37) extension is malformed: key purpose is not an OID: asn1: structure error: tags don't match"},
		{"basicConstraints that is not a SEQUENCE", nil, nil, []pkix.Extension{ext(oidBC, false, []byte{0x05, 0x00})},
			bad + "CSR's basicConstraints (2.5.29.19) extension is malformed: not a SEQUENCE"},
		{"basicConstraints with extra fields", nil, nil, []pkix.Extension{ext(oidBC, false, []byte{0x30, 0x05, 0x02, 0x01, 0x00, 0x05, 0x00})},
			bad + "CSR's basicConstraints (2.5.29.19) extension is malformed: unexpected fields"},
		{"basicConstraints with an indefinite length", nil, nil, []pkix.Extension{ext(oidBC, false, []byte{0x30, 0x80, 0x00, 0x00})},
			bad + "CSR's basicConstraints (2.5.29.19) extension is malformed: asn1: syntax error: indefinite length found (not DER)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := c.key
			if key == nil {
				key = p256(t)
			}
			pemBytes := csrPEM(t, key, &x509.CertificateRequest{URIs: c.uris, ExtraExtensions: c.exts})
			csr, err := ca.ParseCSR(pemBytes, alpha)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if csr == nil {
					t.Fatal("accepted without a CSR")
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, ca.ErrBadCSR) {
				t.Fatalf("got  %v\nwant ErrBadCSR: %s", err, c.want)
			}
		})
	}
}
