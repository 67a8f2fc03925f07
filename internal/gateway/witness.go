package gateway

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// WitnessFile is the file, in a gateway's credential directory, where its
// audit witness keeps the log's pinned key and the newest checkpoint it
// verified (see audit.Witness).
const WitnessFile = "audit_witness.json"

// RemoteCheckpoints is the control plane's audit log as a standalone
// gateway witnesses it: checkpoints and consistency proofs over mTLS.
type RemoteCheckpoints struct{ Client *client.Client }

var _ audit.CheckpointSource = RemoteCheckpoints{}

// Latest implements audit.CheckpointSource.
func (r RemoteCheckpoints) Latest(ctx context.Context) ([]byte, error) {
	msg, err := r.Client.AuditCheckpoint(ctx)
	if client.IsCode(err, "not_found") {
		return nil, fmt.Errorf("%w: %w", audit.ErrNoCheckpoint, err)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: audit checkpoint: %w", err)
	}
	return msg, nil
}

// Consistency implements audit.CheckpointSource.
func (r RemoteCheckpoints) Consistency(ctx context.Context, old, new int64) ([]tlog.Hash, error) {
	proof, err := r.Client.AuditConsistency(ctx, old, new)
	if err != nil {
		return nil, fmt.Errorf("gateway: audit consistency proof: %w", err)
	}
	return proof, nil
}
