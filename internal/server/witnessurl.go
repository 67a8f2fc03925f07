package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// publishTimeout bounds one delivery of a checkpoint to the witness URL.
const publishTimeout = 10 * time.Second

// checkpointPublisher POSTs each newly signed checkpoint (a signed note,
// text/plain) to the witness URL: a copy outside the operator's database
// and data directory, so that a rewritten log is caught even by someone
// who holds neither. Delivery is best effort and in the background; a
// missed checkpoint is covered by the next, which extends it.
func (s *Server) checkpointPublisher(witness string) (func(note []byte), error) {
	u, err := url.Parse(witness)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("server: --audit-witness-url %q must be an http(s) URL", witness)
	}
	hc := &http.Client{Timeout: publishTimeout}
	return func(note []byte) {
		body := bytes.Clone(note)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, witness, bytes.NewReader(body))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "text/plain; charset=utf-8")
			resp, err := hc.Do(req)
			if err != nil {
				s.logger.Warn("could not publish an audit checkpoint to the witness URL", "url", u.Redacted(), "err", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				s.logger.Warn("the witness URL refused an audit checkpoint", "url", u.Redacted(), "status", resp.StatusCode)
			}
		}()
	}, nil
}
