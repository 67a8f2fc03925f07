package ca_test

import (
	"crypto/x509"
	"net/url"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
)

// FuzzParseCSR feeds arbitrary bytes to the CSR parser: it must never panic,
// and anything it accepts must be a self-signed request for an acceptable
// key naming at most the expected identity.
func FuzzParseCSR(f *testing.F) {
	key := p256(f)
	f.Add(csrPEM(f, key, &x509.CertificateRequest{}))
	f.Add(csrPEM(f, key, &x509.CertificateRequest{URIs: []*url.URL{alpha.URL()}}))
	f.Add(csrPEM(f, key, &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://bulkhead.local/agent/beta")}}))
	f.Add(csrPEM(f, key, &x509.CertificateRequest{DNSNames: []string{"x"}}))
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
	})
}
