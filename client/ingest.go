package client

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/api"
)

// IngestAudit writes a gateway's records into the control plane's audit log
// and returns the sequence number of the first once all are durable.
func (c *Client) IngestAudit(ctx context.Context, events []json.RawMessage) (int64, error) {
	var out api.AuditIngestResult
	if err := c.do(ctx, http.MethodPost, "/v1/audit/ingest", api.AuditIngest{Events: events}, &out); err != nil {
		return -1, err
	}
	if len(out.Seqs) == 0 {
		return -1, nil
	}
	return out.Seqs[0], nil
}
