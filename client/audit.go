package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/api"
)

// The audit log's evidence, as a witness (a gateway) or an auditor reads
// it. Nothing here is trusted as served: callers verify checkpoints with a
// pinned key and proofs with tlog.

// maxCheckpoint bounds a served checkpoint or key; real ones are ~200 bytes.
const maxCheckpoint = 16 << 10

// AuditKey returns the audit log's verifier key in note format
// (GET /v1/audit/key). Pin it out of band, or trust it on first use only.
func (c *Client) AuditKey(ctx context.Context) (string, error) {
	b, err := c.getText(ctx, "/v1/audit/key", nil)
	return strings.TrimSpace(string(b)), err
}

// AuditCheckpoint returns the log's latest signed checkpoint, a C2SP signed
// note (GET /v1/audit/checkpoint). A log with none answers not_found.
func (c *Client) AuditCheckpoint(ctx context.Context) ([]byte, error) {
	return c.getText(ctx, "/v1/audit/checkpoint", nil)
}

// AuditConsistency returns a proof that the log's tree of size new extends
// its tree of size old (GET /v1/audit/proof/consistency), to check with
// tlog.CheckTree against two verified checkpoints.
func (c *Client) AuditConsistency(ctx context.Context, old, new int64) ([]tlog.Hash, error) {
	q := url.Values{"old": {strconv.FormatInt(old, 10)}, "new": {strconv.FormatInt(new, 10)}}
	b, err := c.getText(ctx, "/v1/audit/proof/consistency", q)
	if err != nil {
		return nil, err
	}
	var p struct {
		Old   int64       `json:"old"`
		New   int64       `json:"new"`
		Proof []tlog.Hash `json:"proof"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("client: decode consistency proof: %w", err)
	}
	if p.Old != old || p.New != new {
		return nil, fmt.Errorf("client: asked for a consistency proof %d→%d, got %d→%d", old, new, p.Old, p.New)
	}
	return p.Proof, nil
}

// getText GETs path and returns the body, up to maxCheckpoint bytes of it.
func (c *Client) getText(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := c.base.String() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckpoint+1))
	if err != nil {
		return nil, fmt.Errorf("client: read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e = api.Error{Code: "http_error", Message: strings.TrimSpace(string(b))}
		}
		return nil, &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
	}
	if len(b) > maxCheckpoint {
		return nil, fmt.Errorf("client: GET %s: response over %d bytes", path, maxCheckpoint)
	}
	return b, nil
}
