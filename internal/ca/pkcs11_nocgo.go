//go:build !cgo

package ca

import (
	"crypto"
	"crypto/ed25519"
	"errors"
)

// PKCS11KeyStore needs cgo (the PKCS#11 library is loaded as C code).
type PKCS11KeyStore struct{}

var errNoCgo = errors.New("ca: PKCS#11 keys need a build with cgo")

// OpenPKCS11 fails: this build has no cgo.
func OpenPKCS11(PKCS11URI) (*PKCS11KeyStore, error) { return nil, errNoCgo }

// Close does nothing.
func (*PKCS11KeyStore) Close() error { return nil }

// Signer fails.
func (*PKCS11KeyStore) Signer(string) (crypto.Signer, error) { return nil, errNoCgo }

// Generate fails.
func (*PKCS11KeyStore) Generate(string) (crypto.Signer, error) { return nil, errNoCgo }

// Extractable fails.
func (*PKCS11KeyStore) Extractable(string) (bool, bool, error) { return false, false, errNoCgo }

// Ed25519 fails.
func (*PKCS11KeyStore) Ed25519(string, ed25519.PublicKey) (crypto.Signer, error) {
	return nil, errNoCgo
}

// SignerFor fails.
func (*PKCS11KeyStore) SignerFor(crypto.PublicKey) (crypto.Signer, error) { return nil, errNoCgo }

// ExtractableFor fails.
func (*PKCS11KeyStore) ExtractableFor(crypto.PublicKey) (bool, bool, error) {
	return false, false, errNoCgo
}
