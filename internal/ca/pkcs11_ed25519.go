//go:build cgo

package ca

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/miekg/pkcs11"
)

// PKCS#11 3.0 Ed25519 values that miekg/pkcs11 does not name.
const (
	ckmECEdwardsKeyPairGen = 0x00001055
	ckmEdDSA               = 0x00001057
	ckkECEdwards           = 0x00000040
)

// oidEd25519 is id-Ed25519 (RFC 8410), the curve of CKA_EC_PARAMS.
var oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}

// edSession is one logged-in session on the token for Ed25519 keys.
// PKCS#11 sessions are not safe for concurrent use: mu serialises them.
type edSession struct {
	mu     sync.Mutex
	p      *pkcs11.Ctx
	s      pkcs11.SessionHandle
	own    bool // this session initialised the library
	closed bool
}

// errEdClosed is a signer used after its key store closed.
var errEdClosed = errors.New("ca: the PKCS#11 key store is closed")

func (e *edSession) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	_ = e.p.CloseSession(e.s)
	if e.own {
		_ = e.p.Finalize()
	}
	e.p.Destroy()
}

// edOpen opens the Ed25519 session, once.
func (k *PKCS11KeyStore) edOpen() (*edSession, error) {
	k.edMu.Lock()
	defer k.edMu.Unlock()
	if k.ed != nil {
		if k.ed.closed {
			return nil, errEdClosed
		}
		return k.ed, nil
	}
	p := pkcs11.New(k.uri.Module)
	if p == nil {
		return nil, fmt.Errorf("ca: load PKCS#11 library %s", k.uri.Module)
	}
	own := true
	if err := p.Initialize(); err != nil {
		// crypto11 initialised it already in this process: that is fine.
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			p.Destroy()
			return nil, fmt.Errorf("ca: initialise PKCS#11: %w", err)
		}
		own = false
	}
	fail := func(err error) (*edSession, error) {
		if own {
			_ = p.Finalize()
		}
		p.Destroy()
		return nil, err
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return fail(fmt.Errorf("ca: PKCS#11 slots: %w", err))
	}
	var slot uint
	found := false
	for _, sl := range slots {
		if ti, err := p.GetTokenInfo(sl); err == nil && ti.Label == k.uri.Token {
			slot, found = sl, true
			break
		}
	}
	if !found {
		return fail(fmt.Errorf("ca: no PKCS#11 token labelled %q", k.uri.Token))
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fail(fmt.Errorf("ca: PKCS#11 session: %w", err))
	}
	if err := p.Login(s, pkcs11.CKU_USER, k.pin); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		_ = p.CloseSession(s)
		return fail(fmt.Errorf("ca: PKCS#11 login: %w", err))
	}
	k.ed = &edSession{p: p, s: s, own: own}
	return k.ed, nil
}

// Ed25519 returns the named Ed25519 key in the token: the one whose
// public key is want, when the caller knows it (replicas racing on a first
// start may each have made one); else the only one of that name,
// generating it (sensitive, not extractable) if there is none.
func (k *PKCS11KeyStore) Ed25519(name string, want ed25519.PublicKey) (crypto.Signer, error) {
	e, err := k.edOpen()
	if err != nil {
		return nil, err
	}
	label := k.prefix + name
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errEdClosed
	}
	pubs, err := e.findAll(pkcs11.CKO_PUBLIC_KEY, label)
	if err != nil {
		return nil, err
	}
	if len(pubs) == 0 {
		if want != nil {
			return nil, fmt.Errorf("ca: the token holds no key %s: %w", label, fs.ErrNotExist)
		}
		if _, _, err := e.generate(label); err != nil {
			return nil, err
		}
		if pubs, err = e.findAll(pkcs11.CKO_PUBLIC_KEY, label); err != nil {
			return nil, err
		}
	}
	var chosen []ed25519.PublicKey
	var ids [][]byte
	for _, h := range pubs {
		pub, id, err := e.public(h)
		if err != nil {
			return nil, fmt.Errorf("ca: read key %s: %w", label, err)
		}
		if want == nil || want.Equal(pub) {
			chosen, ids = append(chosen, pub), append(ids, id)
		}
	}
	switch {
	case len(chosen) == 0:
		return nil, fmt.Errorf("ca: no key %s in the token is the expected one: %w", label, fs.ErrNotExist)
	case len(chosen) > 1:
		return nil, fmt.Errorf("ca: the token holds %d keys labelled %s: refusing to guess", len(chosen), label)
	}
	priv, err := e.findByID(ids[0])
	if err != nil {
		return nil, err
	}
	return &edSigner{e: e, priv: priv, pub: chosen[0]}, nil
}

// public reads an Ed25519 public key object: its key and CKA_ID.
func (e *edSession) public(h pkcs11.ObjectHandle) (ed25519.PublicKey, []byte, error) {
	attrs, err := e.p.GetAttributeValue(e.s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil), pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
	if err != nil || len(attrs) != 2 {
		return nil, nil, fmt.Errorf("attributes: %v", err)
	}
	point := attrs[0].Value
	var octets []byte
	if rest, err := asn1.Unmarshal(point, &octets); err == nil && len(rest) == 0 {
		point = octets // DER OCTET STRING, as PKCS#11 3.0 says; some tokens give the raw point
	}
	if len(point) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("a %d-byte Ed25519 public key", len(point))
	}
	return ed25519.PublicKey(point), attrs[1].Value, nil
}

// findByID returns the Ed25519 private key with CKA_ID id.
func (e *edSession) findByID(id []byte) (pkcs11.ObjectHandle, error) {
	objs, err := e.search([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards), pkcs11.NewAttribute(pkcs11.CKA_ID, id)})
	if err != nil {
		return 0, err
	}
	if len(objs) != 1 {
		return 0, fmt.Errorf("ca: %d private keys for one Ed25519 public key", len(objs))
	}
	return objs[0], nil
}

// findAll returns the Ed25519 objects of class labelled label.
func (e *edSession) findAll(class uint, label string) ([]pkcs11.ObjectHandle, error) {
	objs, err := e.search([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards)})
	if err != nil {
		return nil, fmt.Errorf("ca: find key %s: %w", label, err)
	}
	return objs, nil
}

// maxObjects bounds one search.
const maxObjects = 64

func (e *edSession) search(tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := e.p.FindObjectsInit(e.s, tmpl); err != nil {
		return nil, err
	}
	objs, _, err := e.p.FindObjects(e.s, maxObjects)
	if ferr := e.p.FindObjectsFinal(e.s); err == nil {
		err = ferr
	}
	return objs, err
}

func (e *edSession) generate(label string) (pub, priv pkcs11.ObjectHandle, err error) {
	params, err := asn1.Marshal(oidEd25519)
	if err != nil {
		return 0, 0, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return 0, 0, err
	}
	pubT := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label), pkcs11.NewAttribute(pkcs11.CKA_ID, id)}
	privT := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label), pkcs11.NewAttribute(pkcs11.CKA_ID, id)}
	pub, priv, err = e.p.GenerateKeyPair(e.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pubT, privT)
	if err != nil {
		return 0, 0, fmt.Errorf("ca: generate Ed25519 key %s in the token: %w", label, err)
	}
	return pub, priv, nil
}

// edSigner signs with an Ed25519 key in the token (pure EdDSA: the
// message itself, no pre-hash).
type edSigner struct {
	e    *edSession
	priv pkcs11.ObjectHandle
	pub  ed25519.PublicKey
}

func (s *edSigner) Public() crypto.PublicKey { return s.pub }

func (s *edSigner) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != 0 {
		return nil, errors.New("ca: Ed25519 signs the message itself, not a digest")
	}
	if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
		return nil, errors.New("ca: Ed25519ctx is not supported")
	}
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	if s.e.closed {
		return nil, errEdClosed
	}
	if err := s.e.p.SignInit(s.e.s, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, s.priv); err != nil {
		return nil, fmt.Errorf("ca: Ed25519 sign: %w", err)
	}
	sig, err := s.e.p.Sign(s.e.s, msg)
	if err != nil {
		return nil, fmt.Errorf("ca: Ed25519 sign: %w", err)
	}
	return sig, nil
}

// edFlags is Extractable for an Ed25519 key.
func (k *PKCS11KeyStore) edFlags(name string) (extractable, sensitive bool, err error) {
	e, err := k.edOpen()
	if err != nil {
		return false, false, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false, false, errEdClosed
	}
	privs, err := e.findAll(pkcs11.CKO_PRIVATE_KEY, k.prefix+name)
	if err != nil {
		return false, false, err
	}
	if len(privs) != 1 {
		return false, false, fmt.Errorf("ca: %d keys %s%s in the token", len(privs), k.prefix, name)
	}
	priv := privs[0]
	attrs, err := e.p.GetAttributeValue(e.s, priv, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil)})
	if err != nil || len(attrs) != 2 {
		return false, false, fmt.Errorf("ca: read key %s%s attributes: %v", k.prefix, name, err)
	}
	flag := func(a *pkcs11.Attribute) bool { return len(a.Value) == 1 && a.Value[0] == 1 }
	return flag(attrs[0]), flag(attrs[1]), nil
}
