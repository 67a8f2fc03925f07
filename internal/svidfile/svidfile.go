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
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey"
)

// File names inside a credential directory. A key kept in a TPM is saved
// as TPMKeyFile instead of KeyFile: the TPM's wrapped blob, which only that
// TPM can load.
const (
	CertFile   = "svid.pem"
	KeyFile    = "svid_key.pem"
	TPMKeyFile = "svid_key.tpm"
	BundleFile = "svid_bundle.pem"
)

// pemKey is a key that saves itself (a TPM key).
type pemKey interface {
	MarshalPEM() ([]byte, error)
}

// Write stores a credential in dir, creating it (mode 0700). The key is
// written first and the certificate last, each atomically, so a reader that
// sees the new certificate also sees its key.
func Write(dir string, chainPEM []byte, key crypto.Signer, bundlePEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("svidfile: create %s: %w", dir, err)
	}
	keyFile, stale := KeyFile, TPMKeyFile
	var keyPEM []byte
	var err error
	if k, ok := key.(pemKey); ok {
		keyFile, stale = TPMKeyFile, KeyFile
		keyPEM, err = k.MarshalPEM()
	} else {
		keyPEM, err = ca.MarshalPrivateKeyPEM(key)
	}
	if err != nil {
		return err
	}
	if err := ca.WriteFileAtomic(filepath.Join(dir, BundleFile), bundlePEM, 0o644); err != nil {
		return fmt.Errorf("svidfile: %w", err)
	}
	if err := ca.WriteFileAtomic(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("svidfile: %w", err)
	}
	if err := ca.WriteFileAtomic(filepath.Join(dir, CertFile), chainPEM, 0o644); err != nil {
		return fmt.Errorf("svidfile: %w", err)
	}
	// The other kind of key no longer matches the certificate.
	if err := os.Remove(filepath.Join(dir, stale)); err != nil && !errors.Is(err, os.ErrNotExist) {
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
	keyPath := filepath.Join(dir, TPMKeyFile)
	st, err := os.Stat(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		keyPath = filepath.Join(dir, KeyFile)
		st, err = os.Stat(keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("svidfile: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("svidfile: %s is readable by others (mode %v); chmod 600 it", keyPath, st.Mode().Perm())
	}
	var svid *x509svid.SVID
	if filepath.Base(keyPath) == TPMKeyFile {
		svid, err = loadTPM(filepath.Join(dir, CertFile), keyPath)
	} else {
		svid, err = x509svid.Load(filepath.Join(dir, CertFile), keyPath)
	}
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

// loadTPM loads a certificate whose key is in a TPM.
func loadTPM(certPath, keyPath string) (*x509svid.SVID, error) {
	certs, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	chain, err := ca.ParseCerts(certs)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := tpmkey.LoadPEM(b)
	if err != nil {
		return nil, err
	}
	if pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("the TPM key is not the certificate's")
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}
