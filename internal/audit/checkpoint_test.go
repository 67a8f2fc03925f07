package audit_test

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

const root = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" // SHA-256 of nothing

func TestParseCheckpoint(t *testing.T) {
	cases := []struct {
		name, text string
		want       audit.Checkpoint
		err        bool
	}{
		{name: "valid", text: "example.com/log\n42\n" + root + "\n", want: audit.Checkpoint{Origin: "example.com/log", Size: 42}},
		{name: "extension lines are ignored", text: "o\n0\n" + root + "\nextra line\n", want: audit.Checkpoint{Origin: "o"}},
		{name: "no final newline", text: "o\n1\n" + root, err: true},
		{name: "missing root", text: "o\n1\n", err: true},
		{name: "empty origin", text: "\n1\n" + root + "\n", err: true},
		{name: "origin with a space", text: "a b\n1\n" + root + "\n", err: true},
		{name: "negative size", text: "o\n-1\n" + root + "\n", err: true},
		{name: "leading zero", text: "o\n01\n" + root + "\n", err: true},
		{name: "size with a sign", text: "o\n+1\n" + root + "\n", err: true},
		{name: "short hash", text: "o\n1\nAAAA\n", err: true},
		{name: "non-canonical base64", text: "o\n1\n" + strings.TrimSuffix(root, "U=") + "V=\n", err: true},
		{name: "not utf-8", text: "o\xff\n1\n" + root + "\n", err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := audit.ParseCheckpoint([]byte(c.text))
			if c.err {
				if !errors.Is(err, audit.ErrBadCheckpoint) {
					t.Fatalf("parse = %+v, %v; want ErrBadCheckpoint", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			want.Root, _ = tlog.ParseHash(root)
			if got != want {
				t.Fatalf("parse = %+v, want %+v", got, want)
			}
		})
	}
}

func TestCheckpointSignatures(t *testing.T) {
	key, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := tlog.ParseHash(root)
	cp := audit.Checkpoint{Origin: logName, Size: 7, Root: h}
	msg, err := cp.Sign(key.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := audit.OpenCheckpoint(msg, key.Verifier); err != nil || got != cp {
		t.Fatalf("open = %+v, %v", got, err)
	}
	// The note format is the standard one: note.Open reads it too.
	if n, err := note.Open(msg, note.VerifierList(key.Verifier)); err != nil || n.Text != string(cp.Text()) {
		t.Fatalf("note.Open = %v", err)
	}
	cases := []struct {
		name string
		msg  []byte
		v    note.Verifier
	}{
		{"another key of the same name", msg, other.Verifier},
		{"a changed size", []byte(strings.Replace(string(msg), "\n7\n", "\n8\n", 1)), key.Verifier},
		{"no verifier", msg, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := audit.OpenCheckpoint(c.msg, c.v); !errors.Is(err, audit.ErrBadCheckpoint) {
				t.Fatalf("open = %v, want ErrBadCheckpoint", err)
			}
		})
	}
	t.Run("another origin", func(t *testing.T) {
		if _, err := (audit.Checkpoint{Origin: "elsewhere", Size: 1}).Sign(key.Signer); err == nil {
			t.Fatal("signed a checkpoint of another log")
		}
	})
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := audit.LoadOrCreateKey(dir, logName)
	if err != nil || !created {
		t.Fatalf("create = %v, %v", created, err)
	}
	k2, created, err := audit.LoadOrCreateKey(dir, logName)
	if err != nil || created || k2.VerifierKey != k1.VerifierKey {
		t.Fatalf("reload = %v, %v, %v", created, err, k2.VerifierKey)
	}
	if fi, err := statMode(dir + "/" + audit.KeyFile); err != nil || fi != 0o600 {
		t.Fatalf("key file mode = %o, %v", fi, err)
	}
	if _, _, err := audit.LoadOrCreateKey(dir, "other/audit"); err == nil {
		t.Fatal("a key for another log was accepted")
	}
	for _, spec := range []string{k1.VerifierKey, dir + "/" + audit.VerifierFile} {
		v, err := audit.ParseVerifier(spec)
		if err != nil || v.Name() != logName || v.KeyHash() != k1.Verifier.KeyHash() {
			t.Fatalf("ParseVerifier(%s) = %v", spec, err)
		}
	}
	if _, err := audit.ParseVerifier(dir + "/missing"); err == nil {
		t.Fatal("parsed a missing file")
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("example.com/log\n42\n" + root + "\n"))
	f.Add([]byte("o\n0\n" + root + "\next\n"))
	f.Add([]byte("o\n99999999999999999999\n" + root + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := audit.ParseCheckpoint(b)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to a checkpoint that parses the same.
		again, err := audit.ParseCheckpoint(cp.Text())
		if err != nil || again != cp {
			t.Fatalf("round trip of %q: %+v, %v", b, again, err)
		}
	})
}

func statMode(path string) (fs.FileMode, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Mode().Perm(), nil
}
