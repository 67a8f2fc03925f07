//go:build cgo

package ca

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// PKCS11KeyStore keeps the CA's keys in a PKCS#11 token (an HSM, or
// SoftHSM2): generated inside it, sensitive and not extractable, so the
// private keys never exist outside the token; the CA only asks it to sign.
type PKCS11KeyStore struct {
	ctx    *crypto11.Context
	prefix string
	uri    PKCS11URI
	pin    string

	// ed holds the raw PKCS#11 session for Ed25519 keys, which crypto11
	// does not handle (the audit log signs its checkpoints with one).
	edMu sync.Mutex
	ed   *edSession
}

var _ KeyStore = (*PKCS11KeyStore)(nil)

// OpenPKCS11 logs in to the token u names.
func OpenPKCS11(u PKCS11URI) (*PKCS11KeyStore, error) {
	pin, err := u.PIN()
	if err != nil {
		return nil, err
	}
	ctx, err := crypto11.Configure(&crypto11.Config{Path: u.Module, TokenLabel: u.Token, Pin: pin})
	if err != nil {
		return nil, fmt.Errorf("ca: open PKCS#11 token %q with %s: %w", u.Token, u.Module, err)
	}
	return &PKCS11KeyStore{ctx: ctx, prefix: u.Object, uri: u, pin: pin}, nil
}

// Close logs out of the token.
func (k *PKCS11KeyStore) Close() error {
	k.edMu.Lock()
	if k.ed != nil {
		k.ed.close()
		k.ed = nil
	}
	k.edMu.Unlock()
	return k.ctx.Close()
}

// Signer finds the named key pair.
func (k *PKCS11KeyStore) Signer(name string) (crypto.Signer, error) {
	found, err := k.ctx.FindKeyPairs(nil, []byte(k.prefix+name))
	switch {
	case err != nil:
		return nil, fmt.Errorf("ca: find key %s%s in the token: %w", k.prefix, name, err)
	case len(found) == 0:
		return nil, fmt.Errorf("ca: key %s%s is not in the token: %w", k.prefix, name, fs.ErrNotExist)
	case len(found) > 1:
		return nil, fmt.Errorf("ca: the token holds %d keys labelled %s%s: refusing to guess", len(found), k.prefix, name)
	}
	return found[0], nil
}

// Generate creates the named ECDSA P-256 key pair in the token, replacing
// any of that name.
func (k *PKCS11KeyStore) Generate(name string) (crypto.Signer, error) {
	label := []byte(k.prefix + name)
	old, err := k.ctx.FindKeyPairs(nil, label)
	if err != nil {
		return nil, fmt.Errorf("ca: find key %s in the token: %w", label, err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("ca: key id: %w", err)
	}
	s, err := k.ctx.GenerateECDSAKeyPairWithLabel(id, label, elliptic.P256())
	if err != nil {
		return nil, fmt.Errorf("ca: generate key %s in the token: %w", label, err)
	}
	var errs []error
	for _, o := range old {
		errs = append(errs, o.Delete())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ca: delete the replaced key %s: %w", label, err)
	}
	return s, nil
}

// Extractable reports whether the named key's private half may leave the
// token (CKA_EXTRACTABLE), and whether it is sensitive (CKA_SENSITIVE).
func (k *PKCS11KeyStore) Extractable(name string) (extractable, sensitive bool, err error) {
	if ext, sens, err := k.edFlags(name); err == nil {
		return ext, sens, nil // an Ed25519 key, which crypto11 cannot read
	}
	s, err := k.Signer(name)
	if err != nil {
		return false, false, err
	}
	attrs, err := k.ctx.GetAttributes(s, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
	if err != nil {
		return false, false, fmt.Errorf("ca: read key %s%s attributes: %w", k.prefix, name, err)
	}
	flag := func(t crypto11.AttributeType) bool {
		a := attrs[t]
		return a != nil && len(a.Value) == 1 && a.Value[0] == 1
	}
	return flag(crypto11.CkaExtractable), flag(crypto11.CkaSensitive), nil
}
