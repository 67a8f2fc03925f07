package secretbox_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

func TestSealOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	box, err := secretbox.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("master key mode %v", st.Mode().Perm())
	}
	sealed, err := box.Seal("files-token", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("s3cret")) {
		t.Fatal("plaintext visible in sealed value")
	}
	again, err := secretbox.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := again.Open("files-token", sealed); err != nil || string(pt) != "s3cret" {
		t.Fatalf("open with the reloaded key: %q %v", pt, err)
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	other, _ := secretbox.LoadOrCreate(filepath.Join(t.TempDir(), "other.key"))
	for name, c := range map[string]struct {
		box  *secretbox.Box
		name string
		val  []byte
	}{
		"other name": {box, "billing-token", sealed},
		"tampered":   {box, "files-token", tampered},
		"other key":  {other, "files-token", sealed},
		"truncated":  {box, "files-token", sealed[:5]},
	} {
		if _, err := c.box.Open(c.name, c.val); !errors.Is(err, secretbox.ErrOpen) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := secretbox.LoadOrCreate(path); err == nil {
		t.Fatal("a world-readable master key was accepted")
	}
}
