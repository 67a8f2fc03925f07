package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// lockFile holds the data directory's lock while a control plane uses it.
const lockFile = "serve.lock"

// LockDataDir takes an exclusive lock on dir, so that two control planes
// never share one data directory (one SQLite writer, one set of keys and
// credentials). The lock is the kernel's (flock): it ends with the
// process, however that ends.
func LockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("server: lock the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("server: another control plane is using %s (it holds %s): stop it first, or give this one its own --data-dir", dir, path)
		}
		return nil, fmt.Errorf("server: lock the data directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// checkNotLost refuses a store that holds nothing while the data
// directory holds the keys of a control plane that has run: the store was
// lost or replaced (a failed disk, a wrong volume, a wrong --store), and
// starting would begin a new history under the old CA and log key as if
// the agents, policies and audit log had never been. --init says to do it
// anyway.
func (s *Server) checkNotLost(ctx context.Context) error {
	td, err := s.db.Meta(ctx, "trust_domain")
	if err != nil || td != "" || s.cfg.Init {
		return err
	}
	for _, p := range []string{filepath.Join(s.cfg.caDir(), "root.pem"), filepath.Join(s.cfg.AuditDir(), audit.KeyFile), filepath.Join(s.cfg.AuditDir(), audit.VerifierFile)} {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return fmt.Errorf("server: the store (%s) is empty, but %s exists: this control plane has run before and its agents, policies and audit log are not in this store. Point --store at its database, or restore a backup ('bulkhead restore'); to start a new history under the same keys, pass --init", s.db.Dialect(), p)
	}
	return nil
}
