package console

import (
	"bytes"
	"context"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/report"
)

// Reports are the evidence views: the tier assessment and an agent's
// blast radius, computed from live state when asked.
type Reports interface {
	Assessment(ctx context.Context) (api.Assessment, error)
	BlastRadius(ctx context.Context, agent string) (api.BlastRadius, error)
}

// reportCSP is the policy of the report pages: the report package's
// self-contained HTML, with its own inline style and no script at all.
const reportCSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// assessPage shows which tier each control surface really reaches.
func (c *Console) assessPage(w http.ResponseWriter, r *http.Request, _ page) {
	a, err := c.cfg.Reports.Assessment(r.Context())
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	c.writeReport(w, r, func(b *bytes.Buffer) error { return report.Assessment(b, a) })
}

// blastPage shows what an agent can reach, and how (?agent=NAME).
func (c *Console) blastPage(w http.ResponseWriter, r *http.Request, _ page) {
	b, err := c.cfg.Reports.BlastRadius(r.Context(), r.URL.Query().Get("agent"))
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	c.writeReport(w, r, func(buf *bytes.Buffer) error { return report.BlastRadius(buf, b) })
}

func (c *Console) writeReport(w http.ResponseWriter, r *http.Request, render func(*bytes.Buffer) error) {
	var b bytes.Buffer
	if err := render(&b); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	w.Header().Set("Content-Security-Policy", reportCSP)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}
