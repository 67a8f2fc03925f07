package audit

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Files of the log's signing key inside its directory (DATA-DIR/audit).
// log.key holds the private key and, on its second line, the public
// verifier key; log.pub is a copy of the verifier key to hand out.
const (
	KeyFile      = "log.key"
	VerifierFile = "log.pub"
)

// Key is the log's checkpoint signing key.
type Key struct {
	Signer   note.Signer
	Verifier note.Verifier
	// VerifierKey is the public key in note format, name+hash+data: what
	// anyone checking checkpoints pins.
	VerifierKey string
}

// LoadOrCreateKey loads the key in dir or, on first start, creates an
// Ed25519 key named name (the log's origin). The private key file is mode
// 0600 and is never replaced once written.
func LoadOrCreateKey(dir, name string) (Key, bool, error) {
	path := filepath.Join(dir, KeyFile)
	b, err := os.ReadFile(path)
	created := false
	if errors.Is(err, fs.ErrNotExist) {
		b, err = createKey(dir, path, name)
		created = err == nil
	}
	if err != nil {
		return Key{}, false, fmt.Errorf("audit: log key: %w", err)
	}
	skey, vkey, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	s, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return Key{}, false, fmt.Errorf("audit: log key %s: %w", path, err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return Key{}, false, fmt.Errorf("audit: log key %s: verifier line: %w", path, err)
	}
	if s.Name() != name || v.Name() != name || s.KeyHash() != v.KeyHash() {
		return Key{}, false, fmt.Errorf("audit: log key %s belongs to log %q, not %q", path, s.Name(), name)
	}
	k := Key{Signer: s, Verifier: v, VerifierKey: strings.TrimSpace(vkey)}
	// The public copy is a convenience; rewrite it if it is missing.
	pub := filepath.Join(dir, VerifierFile)
	if _, err := os.Stat(pub); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(pub, []byte(k.VerifierKey+"\n"), 0o644); err != nil {
			return Key{}, false, fmt.Errorf("audit: write %s: %w", pub, err)
		}
	}
	return k, created, nil
}

func createKey(dir, path, name string) ([]byte, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// O_EXCL: two processes starting on one data directory cannot both
	// create a key; the loser reads the winner's.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	b := []byte(skey + "\n" + vkey + "\n")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return b, f.Close()
}

// ParseVerifier returns the verifier for spec: a verifier key in note
// format (name+hash+data) or the path of a file holding one.
func ParseVerifier(spec string) (note.Verifier, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, errors.New("audit: no verifier key given")
	}
	if v, err := note.NewVerifier(spec); err == nil {
		return v, nil
	}
	b, err := os.ReadFile(spec)
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key %q is neither a key nor a readable file: %w", spec, err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key in %s: %w", spec, err)
	}
	return v, nil
}

// KeyFromSigner is the log's key named name held by an Ed25519 signer
// that never gives its private key out (a PKCS#11 token's), with its
// verifier key written to dir/VerifierFile for handing out. created says
// the verifier file was new.
func KeyFromSigner(dir, name string, s crypto.Signer) (Key, bool, error) {
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok {
		return Key{}, false, fmt.Errorf("audit: log key is %T, want Ed25519", s.Public())
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return Key{}, false, fmt.Errorf("audit: log key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Key{}, false, fmt.Errorf("audit: log key: %w", err)
	}
	k := Key{Signer: signerKey{name: name, hash: v.KeyHash(), s: s}, Verifier: v, VerifierKey: vkey}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Key{}, false, fmt.Errorf("audit: %w", err)
	}
	pubPath := filepath.Join(dir, VerifierFile)
	created := false
	if _, err := os.Stat(pubPath); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(pubPath, []byte(vkey+"\n"), 0o644); err != nil {
			return Key{}, false, fmt.Errorf("audit: write %s: %w", pubPath, err)
		}
		created = true
	}
	return k, created, nil
}

// signerKey is a note.Signer over a crypto.Signer.
type signerKey struct {
	name string
	hash uint32
	s    crypto.Signer
}

func (k signerKey) Name() string    { return k.name }
func (k signerKey) KeyHash() uint32 { return k.hash }
func (k signerKey) Sign(msg []byte) ([]byte, error) {
	return k.s.Sign(rand.Reader, msg, crypto.Hash(0))
}

// VerifierPublicKey is the Ed25519 public key in a verifier key
// (name+hash+base64(0x01 || key)).
func VerifierPublicKey(vkey string) (ed25519.PublicKey, error) {
	if _, err := note.NewVerifier(vkey); err != nil {
		return nil, fmt.Errorf("audit: verifier key: %w", err)
	}
	// name+hash+key: names have no "+", but base64 keys may.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("audit: verifier key: not name+hash+key")
	}
	b, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(b) != 1+ed25519.PublicKeySize || b[0] != 1 {
		return nil, errors.New("audit: verifier key: not an Ed25519 key")
	}
	return ed25519.PublicKey(b[1:]), nil
}
