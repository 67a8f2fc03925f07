package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyStore holds the CA's private keys. The CA only ever asks for a
// crypto.Signer, so a PKCS#11 HSM or a cloud KMS can implement KeyStore
// without the CA changing.
type KeyStore interface {
	// Signer returns the named key; an error wrapping fs.ErrNotExist if
	// there is none.
	Signer(name string) (crypto.Signer, error)
	// Generate creates (or replaces) the named ECDSA P-256 key.
	Generate(name string) (crypto.Signer, error)
}

// KeyFinder is a KeyStore that finds a key by its public key: a token
// shared by replicas holds several keys of one name (each replica's
// intermediate, the ones rotated out), and the certificate says which.
type KeyFinder interface {
	SignerFor(pub crypto.PublicKey) (crypto.Signer, error)
}

// signerOf returns the key of cert: by its public key where the store can
// find one so, else by name; either way it must be cert's.
func signerOf(keys KeyStore, name string, cert *x509.Certificate) (crypto.Signer, error) {
	var (
		s   crypto.Signer
		err error
	)
	if f, ok := keys.(KeyFinder); ok {
		s, err = f.SignerFor(cert.PublicKey)
	} else {
		s, err = keys.Signer(name)
	}
	if err != nil {
		return nil, err
	}
	if pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: the %s key does not match %s's certificate", errKeyMismatch, name, name)
	}
	return s, nil
}

// errKeyMismatch is a key that is not its certificate's.
var errKeyMismatch = errors.New("ca: key mismatch")

// FileKeyStore keeps keys as PKCS#8 PEM files, mode 0600, in a directory.
type FileKeyStore struct {
	Dir string
}

var _ KeyStore = FileKeyStore{}

func (k FileKeyStore) path(name string) string { return filepath.Join(k.Dir, name+"_key.pem") }

// Signer loads the named key.
func (k FileKeyStore) Signer(name string) (crypto.Signer, error) {
	b, err := os.ReadFile(k.path(name))
	if err != nil {
		return nil, fmt.Errorf("ca: read key %s: %w", name, err)
	}
	return ParsePrivateKeyPEM(b)
}

// Generate creates a new ECDSA P-256 key and writes it.
func (k FileKeyStore) Generate(name string) (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key: %w", err)
	}
	b, err := MarshalPrivateKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(k.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: create key directory: %w", err)
	}
	if err := WriteFileAtomic(k.path(name), b, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// ParsePrivateKeyPEM parses a PKCS#8 (or SEC 1 EC) private key.
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("ca: no PEM block in key file")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("ca: unexpected PEM block %q in key file", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: parse private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: key of type %T cannot sign", key)
	}
	return s, nil
}

// MarshalPrivateKeyPEM encodes a key as PKCS#8 PEM.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFileAtomic writes data to path through a temporary file and a rename,
// so a reader never sees a half-written certificate or key.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
