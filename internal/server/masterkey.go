package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
)

// masterKeyCheck names the sealed value that ties the store to its master
// key: a replica whose master.key does not open it holds another key.
const masterKeyCheck = "master_key_check"

// openMasterKey opens DATA/master.key, creating it only for a store that
// has never been sealed. A replica missing the key, or holding another
// one, is refused before it writes anything: a new key would not open what
// the store holds, and would leave the wrong key on disk.
func (s *Server) openMasterKey(ctx context.Context) (*secretbox.Box, error) {
	path := s.cfg.masterKeyPath()
	check, err := s.db.Meta(ctx, masterKeyCheck)
	if err != nil {
		return nil, err
	}
	if check == "" {
		box, err := secretbox.LoadOrCreate(path)
		if err != nil {
			return nil, err
		}
		sealed, err := box.Seal(masterKeyCheck, []byte("bulkhead"))
		if err != nil {
			return nil, err
		}
		if check, err = s.db.SetMetaOnce(ctx, masterKeyCheck, base64.StdEncoding.EncodeToString(sealed)); err != nil {
			return nil, err
		}
		return box, s.verifyMasterKey(box, check)
	}
	box, err := secretbox.Load(path)
	if errors.Is(err, secretbox.ErrNoKey) {
		return nil, fmt.Errorf("server: %s is missing, but the store holds values sealed with a master key: copy master.key from a replica of this trust domain (see docs/ha.md); a new key would not open them", path)
	}
	if err != nil {
		return nil, err
	}
	return box, s.verifyMasterKey(box, check)
}

func (s *Server) verifyMasterKey(box *secretbox.Box, check string) error {
	sealed, err := base64.StdEncoding.DecodeString(check)
	if err == nil {
		_, err = box.Open(masterKeyCheck, sealed)
	}
	if err != nil {
		return fmt.Errorf("server: %s is not the master key this store was sealed with: copy master.key from a replica of this trust domain (see docs/ha.md)", s.cfg.masterKeyPath())
	}
	return nil
}
