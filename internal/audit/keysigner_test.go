package audit_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// A log key held by a signer that never gives its private key out (a
// token's): notes it signs open with its verifier key, which is written
// for handing out, and no private key file is written.
func TestKeyFromSigner(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k, created, err := audit.KeyFromSigner(dir, "bulkhead.local/audit", priv)
	if err != nil || !created {
		t.Fatalf("%v %v", created, err)
	}
	msg, err := note.Sign(&note.Note{Text: "bulkhead.local/audit\n7\nAAAA\n"}, k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(k.Verifier)); err != nil {
		t.Fatalf("open: %v", err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, audit.VerifierFile))
	if err != nil || strings.TrimSpace(string(pub)) != k.VerifierKey {
		t.Fatalf("verifier file: %q %v", pub, err)
	}
	if _, err := os.Stat(filepath.Join(dir, audit.KeyFile)); !os.IsNotExist(err) {
		t.Fatalf("a private key file was written: %v", err)
	}
	if _, created, err := audit.KeyFromSigner(dir, "bulkhead.local/audit", priv); err != nil || created {
		t.Fatalf("again: %v %v", created, err)
	}
}

// The public key comes back out of any verifier key, "+" in its base64
// included.
func TestVerifierPublicKey(t *testing.T) {
	for range 200 {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k, _, err := audit.KeyFromSigner(t.TempDir(), "bulkhead.local/audit", priv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := audit.VerifierPublicKey(k.VerifierKey)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("%s: %v", k.VerifierKey, err)
		}
	}
	if _, err := audit.VerifierPublicKey("not+a+key"); err == nil {
		t.Fatal("a bad key parsed")
	}
}
