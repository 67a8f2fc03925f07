// Package secretbox seals secrets that the control plane must keep in its
// store — token signing keys, upstream credentials — so that a copy of the
// database alone reveals none of them.
//
// The master key is 32 random bytes in a file of the data directory (mode
// 0600), next to the CA keys; replicas that share a store share it the same
// way they share the CA. Sealing is AES-256-GCM with a random nonce and the
// secret's name as associated data, so a sealed value moved to another name
// does not open.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Box seals and opens values with one master key.
type Box struct {
	aead cipher.AEAD
}

const keyLen = 32

// version prefixes sealed values so the format can change.
const version byte = 1

// LoadOrCreate reads the master key at path, creating it on first use.
func LoadOrCreate(path string) (*Box, error) {
	_, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key := make([]byte, keyLen)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("secretbox: generate master key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("secretbox: %w", err)
		}
		// O_EXCL: two processes starting together must not both create it.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreate(path)
		}
		if err != nil {
			return nil, fmt.Errorf("secretbox: create master key: %w", err)
		}
		if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("secretbox: write master key: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("secretbox: write master key: %w", err)
		}
		return New(key)
	case err != nil:
		return nil, fmt.Errorf("secretbox: read master key: %w", err)
	}
	return Load(path)
}

// ErrNoKey is a master key file that does not exist.
var ErrNoKey = errors.New("secretbox: no master key")

// Load reads the master key at path; it never creates one.
func Load(path string) (*Box, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w at %s", ErrNoKey, path)
	case err != nil:
		return nil, fmt.Errorf("secretbox: read master key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secretbox: %s is readable by others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != keyLen {
		return nil, fmt.Errorf("secretbox: %s is not a 32-byte hex key", path)
	}
	return New(key)
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != keyLen {
		return nil, fmt.Errorf("secretbox: key must be %d bytes", keyLen)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext bound to name.
func (b *Box) Seal(name string, plaintext []byte) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize(), 1+b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secretbox: nonce: %w", err)
	}
	out := append([]byte{version}, nonce...)
	return b.aead.Seal(out, nonce, plaintext, []byte(name)), nil
}

// ErrOpen means a sealed value did not open: wrong key, wrong name, or
// tampered.
var ErrOpen = errors.New("secretbox: sealed value does not open (wrong key, wrong name, or tampered)")

// Open decrypts a value sealed for name.
func (b *Box) Open(name string, sealed []byte) ([]byte, error) {
	ns := b.aead.NonceSize()
	if len(sealed) < 1+ns+b.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	pt, err := b.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(name))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
