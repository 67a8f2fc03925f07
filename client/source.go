// Package client is the Go client for Bulkhead: agents use it to enroll,
// renew and keep their X.509-SVID rotated; operators and the CLI use it to
// call the control plane's API. Every call after enrollment is mutual TLS
// with an SVID, and the control plane is authenticated by its SPIFFE ID, not
// only by the CA (pinning).
package client

import (
	"crypto/x509"
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

// ServerPath is the SPIFFE ID path of the control plane; clients accept a
// server only if it presents this ID in their trust domain.
const ServerPath = "/bulkhead/server"

// ServerID returns the control plane's SPIFFE ID in td.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID { return spiffeid.RequireFromPath(td, ServerPath) }

// Source holds the current SVID and trust bundle. It implements go-spiffe's
// x509svid.Source and x509bundle.Source, so it plugs into
// spiffetls/tlsconfig; a Rotator swaps its contents as the SVID rotates.
type Source struct {
	mu     sync.RWMutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// LoadSource reads a credential directory (svid.pem, svid_key.pem,
// svid_bundle.pem).
func LoadSource(dir string) (*Source, error) {
	c, err := svidfile.Load(dir)
	if err != nil {
		return nil, err
	}
	return &Source{svid: c.SVID, bundle: c.Bundle}, nil
}

// GetX509SVID returns the current SVID.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// GetX509BundleForTrustDomain returns the trust bundle of td.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.bundle.TrustDomain() != td {
		return nil, fmt.Errorf("client: no trust bundle for trust domain %q", td)
	}
	return s.bundle, nil
}

// ID is the SPIFFE ID of the current SVID.
func (s *Source) ID() spiffeid.ID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid.ID
}

// Leaf is the current SVID's certificate.
func (s *Source) Leaf() *x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid.Certificates[0]
}

func (s *Source) set(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svid, s.bundle = svid, bundle
}
