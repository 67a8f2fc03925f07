//go:build !cgo

package ca

import (
	"crypto"
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
func (*PKCS11KeyStore) Ed25519(string) (crypto.Signer, error) { return nil, errNoCgo }
