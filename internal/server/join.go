package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

// The keys a replica needs besides the database and the master key: the
// CA's root and the audit log's signing key. The first replica stores them
// in the database sealed with the master key; a replica that starts
// without them restores them from there, so joining a replica takes the
// database and master.key only. (Each replica keeps its own intermediate
// CA, issued by the shared root.)
var sealedFiles = []string{"ca/root.pem", "ca/root_key.pem", "audit/" + audit.KeyFile, "audit/" + audit.VerifierFile}

// sealed are the key files this control plane keeps sealed in the store:
// all of sealedFiles, but the CA's and the audit log's keys when they live
// in a PKCS#11 token, where they cannot leave (and must not be written out
// from an old copy).
func (s *Server) sealed() []string {
	if s.cfg.CAKey == "" {
		return sealedFiles
	}
	return slices.DeleteFunc(slices.Clone(sealedFiles), func(f string) bool { return f == "ca/root_key.pem" || f == "audit/"+audit.KeyFile })
}

const sealedPrefix = "sealed_file:"

// restoreKeys writes to the data directory every sealed key file the
// store holds and the directory lacks. A file that exists is never
// overwritten: the fingerprint checks that follow refuse a mismatch.
func (s *Server) restoreKeys(ctx context.Context, box *secretbox.Box) error {
	for _, rel := range s.sealed() {
		path := filepath.Join(s.cfg.DataDir, filepath.FromSlash(rel))
		if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		v, err := s.db.Meta(ctx, sealedPrefix+rel)
		if err != nil {
			return err
		}
		if v == "" {
			continue // not stored yet: a first start creates it
		}
		sealed, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return fmt.Errorf("server: sealed %s in the store: %w", rel, err)
		}
		plain, err := box.Open(rel, sealed)
		if err != nil {
			return fmt.Errorf("server: sealed %s in the store does not open with %s: %w", rel, s.cfg.masterKeyPath(), err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("server: restore %s: %w", rel, err)
		}
		if err := ca.WriteFileAtomic(path, plain, 0o600); err != nil {
			return fmt.Errorf("server: restore %s: %w", rel, err)
		}
		clear(plain)
		s.logger.Info("restored a key from the store", "file", path)
	}
	return nil
}

// storeKeys seals into the store the key files it does not hold yet.
func (s *Server) storeKeys(ctx context.Context, box *secretbox.Box) error {
	for _, rel := range s.sealed() {
		b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, filepath.FromSlash(rel)))
		if err != nil {
			return fmt.Errorf("server: seal %s into the store: %w", rel, err)
		}
		sealed, err := box.Seal(rel, b)
		clear(b)
		if err != nil {
			return err
		}
		if _, err := s.db.SetMetaOnce(ctx, sealedPrefix+rel, base64.StdEncoding.EncodeToString(sealed)); err != nil {
			return err
		}
	}
	return nil
}
