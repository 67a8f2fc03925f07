package ca_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
)

// FuzzParseCSR feeds arbitrary bytes to the CSR parser: it must never panic,
// and anything it accepts must be a self-signed request for an acceptable
// key naming at most the expected identity and requesting nothing a leaf
// SVID does not get (checked here with encoding/asn1's lenient decoding,
// against the parser's strict one).
func FuzzParseCSR(f *testing.F) {
	key := p256(f)
	f.Add(csrPEM(f, key, &x509.CertificateRequest{}))
	f.Add(csrPEM(f, key, &x509.CertificateRequest{URIs: []*url.URL{alpha.URL()}}))
	f.Add(csrPEM(f, key, &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://bulkhead.local/agent/beta")}}))
	f.Add(csrPEM(f, key, &x509.CertificateRequest{DNSNames: []string{"x"}}))
	for _, exts := range [][]pkix.Extension{
		{basicConstraintsCA()},
		{ext(oidBC, false, emptySequence), ext(oidKU, true, keyUsage(f, 0)), ext(oidEKU, false, mustDER(f, []asn1.ObjectIdentifier{oidServerAuth, oidClientAuth}))},
		{ext(oidKU, true, keyUsage(f, 0, 5))},
		{ext(oidBC, true, []byte{0x30, 0x03, 0x02, 0x01, 0x00})},
		{ext(oidEKU, false, mustDER(f, []asn1.ObjectIdentifier{oidCodeSigning}))},
		{ext(oidNameConstr, true, emptySequence)},
		{ext(oidSKI, false, mustDER(f, []byte{1, 2, 3}))},
		{ext(oidPrivate, false, mustDER(f, "x"))},
		{ext(asn1.ObjectIdentifier{1, 2, 3, 4, 5}, true, []byte{0x05, 0x00})},
		{ext(oidSAN, false, generalNames(f, uriName(alpha.String())))},
		{ext(oidSAN, false, generalNames(f, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}}))},
	} {
		f.Add(csrPEM(f, key, &x509.CertificateRequest{ExtraExtensions: exts}))
	}
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ca.ParseCSR(b, alpha)
		if err != nil {
			return
		}
		if csr.CheckSignature() != nil {
			t.Fatal("accepted a CSR whose signature does not verify")
		}
		if ca.CheckPublicKey(csr.PublicKey) != nil {
			t.Fatal("accepted an unacceptable key")
		}
		if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != alpha.String()) || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
			t.Fatalf("accepted SANs %v %v", csr.URIs, csr.DNSNames)
		}
		seen := map[string]bool{}
		for _, e := range csr.Extensions {
			if seen[e.Id.String()] {
				t.Fatalf("accepted extension %s twice", e.Id)
			}
			seen[e.Id.String()] = true
			switch {
			case e.Id.Equal(oidSAN):
			case e.Id.Equal(oidKU):
				var bits asn1.BitString
				if _, err := asn1.Unmarshal(e.Value, &bits); err != nil {
					t.Fatalf("accepted a keyUsage that does not parse: %v", err)
				}
				for i := 1; i < bits.BitLength; i++ {
					if bits.At(i) != 0 {
						t.Fatalf("accepted key usage bit %d", i)
					}
				}
			case e.Id.Equal(oidEKU):
				var purposes []asn1.ObjectIdentifier
				if _, err := asn1.Unmarshal(e.Value, &purposes); err != nil {
					t.Fatalf("accepted an extKeyUsage that does not parse: %v", err)
				}
				for _, p := range purposes {
					if !p.Equal(oidServerAuth) && !p.Equal(oidClientAuth) {
						t.Fatalf("accepted extended key usage %s", p)
					}
				}
			case e.Id.Equal(oidBC):
				var bc struct {
					IsCA    bool `asn1:"optional"`
					PathLen int  `asn1:"optional,default:-1"`
				}
				if _, err := asn1.Unmarshal(e.Value, &bc); err != nil {
					t.Fatalf("accepted basicConstraints that do not parse: %v", err)
				}
				if bc.IsCA || bc.PathLen != -1 {
					t.Fatalf("accepted basicConstraints %+v", bc)
				}
			default:
				t.Fatalf("accepted extension %s", e.Id)
			}
		}
	})
}
