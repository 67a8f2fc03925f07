//go:build cgo

package ca

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io/fs"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
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

	closeOnce sync.Once
	closeErr  error
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

// Close logs out of the token; signers it gave out fail from then on.
func (k *PKCS11KeyStore) Close() error {
	k.closeOnce.Do(func() {
		k.edMu.Lock()
		if k.ed != nil {
			k.ed.close()
		}
		k.edMu.Unlock()
		k.closeErr = k.ctx.Close()
	})
	return k.closeErr
}

// Signer finds the named key pair: the one labelled so, if there is
// exactly one. The CA finds its keys by their certificates' public keys
// instead (SignerFor): several replicas, and rotations, leave several
// keys of one name in a shared token.
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

// SignerFor finds the token's key pair whose public key is pub: how the
// CA finds the key of a certificate it holds, and the token service the
// key a stored reference names. A key that is not there is
// fs.ErrNotExist.
func (k *PKCS11KeyStore) SignerFor(pub crypto.PublicKey) (crypto.Signer, error) {
	want, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("ca: a public key of type %T", pub)
	}
	// Only EC keys: crypto11 cannot read the Ed25519 ones beside them.
	attrs := crypto11.NewAttributeSet()
	if err := attrs.Set(crypto11.CkaKeyType, pkcs11.CKK_EC); err != nil {
		return nil, err
	}
	all, err := k.ctx.FindKeyPairsWithAttributes(attrs)
	if err != nil {
		return nil, fmt.Errorf("ca: list the token's keys: %w", err)
	}
	for _, s := range all {
		if want.Equal(s.Public()) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("ca: no key in the token matches the certificate's public key: %w", fs.ErrNotExist)
}

// Generate creates a new ECDSA P-256 key pair in the token, labelled
// PREFIX+name and a random suffix. It never deletes a key: in a token
// that replicas share, another replica's key of the same name is still in
// use, and a root's key has no other copy.
func (k *PKCS11KeyStore) Generate(name string) (crypto.Signer, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("ca: key id: %w", err)
	}
	label := []byte(fmt.Sprintf("%s%s-%x", k.prefix, name, id[:4]))
	s, err := k.ctx.GenerateECDSAKeyPairWithLabel(id, label, elliptic.P256())
	if err != nil {
		return nil, fmt.Errorf("ca: generate key %s in the token: %w", label, err)
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
	return k.flags(s)
}

// ExtractableFor is Extractable for the key whose public key is pub.
func (k *PKCS11KeyStore) ExtractableFor(pub crypto.PublicKey) (extractable, sensitive bool, err error) {
	s, err := k.SignerFor(pub)
	if err != nil {
		return false, false, err
	}
	return k.flags(s)
}

func (k *PKCS11KeyStore) flags(s crypto.Signer) (extractable, sensitive bool, err error) {
	attrs, err := k.ctx.GetAttributes(s, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
	if err != nil {
		return false, false, fmt.Errorf("ca: read key attributes: %w", err)
	}
	flag := func(t crypto11.AttributeType) bool {
		a := attrs[t]
		return a != nil && len(a.Value) == 1 && a.Value[0] == 1
	}
	return flag(crypto11.CkaExtractable), flag(crypto11.CkaSensitive), nil
}
