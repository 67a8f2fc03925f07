// Package svidfile reads and writes a credential directory in the
// spiffe-helper layout that agents, operators and Bulkhead's own components
// share: svid.pem (leaf then intermediates), svid_key.pem (PKCS#8, mode
// 0600) and svid_bundle.pem (trust anchors).
package svidfile

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
)

// File names inside a credential directory.
const (
	CertFile   = "svid.pem"
	KeyFile    = "svid_key.pem"
	BundleFile = "svid_bundle.pem"
)

// Write stores a credential in dir, creating it (mode 0700). The key is
// written first and the certificate last, each atomically, so a reader that
// sees the new certificate also sees its key.
func Write(dir string, chainPEM []byte, key crypto.Signer, bundlePEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("svidfile: create %s: %w", dir, err)
	}
	keyPEM, err := ca.MarshalPrivateKeyPEM(key)
	if err != nil {
		return err
	}
	if err := ca.WriteFileAtomic(filepath.Join(dir, BundleFile), bundlePEM, 0o644); err != nil {
		return fmt.Errorf("svidfile: %w", err)
	}
	if err := ca.WriteFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("svidfile: %w", err)
	}
	if err := ca.WriteFileAtomic(filepath.Join(dir, CertFile), chainPEM, 0o644); err != nil {
		return fmt.Errorf("svidfile: %w", err)
	}
	return nil
}

// Credential is a loaded credential directory.
type Credential struct {
	SVID   *x509svid.SVID
	Bundle *x509bundle.Bundle
}

// Load reads dir. The key must be private to its owner: a key file that
// others can read is refused, as ssh does.
func Load(dir string) (*Credential, error) {
	keyPath := filepath.Join(dir, KeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("svidfile: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("svidfile: %s is readable by others (mode %v); chmod 600 it", keyPath, st.Mode().Perm())
	}
	svid, err := x509svid.Load(filepath.Join(dir, CertFile), keyPath)
	if err != nil {
		return nil, fmt.Errorf("svidfile: load SVID from %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, fmt.Errorf("svidfile: %w", err)
	}
	roots, err := ca.ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("svidfile: %s: %w", BundleFile, err)
	}
	return &Credential{SVID: svid, Bundle: x509bundle.FromX509Authorities(svid.ID.TrustDomain(), roots)}, nil
}

// Exists reports whether dir holds a certificate file.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CertFile))
	return !errors.Is(err, os.ErrNotExist)
}

// Leaf returns the credential's leaf certificate.
func (c *Credential) Leaf() *x509.Certificate { return c.SVID.Certificates[0] }
