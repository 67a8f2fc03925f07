package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// upstream delivers a request to a server: over HTTP, or to an in-process
// handler such as the stdio bridge.
type upstream interface {
	RoundTrip(*http.Request) (*http.Response, error)
}

// newHTTPUpstream returns a client for an HTTP upstream: bounded dial and
// header times, and no redirects (a redirect could send the injected
// credential elsewhere).
func newHTTPUpstream(limits Limits) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			ResponseHeaderTimeout: limits.UpstreamTimeout,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// clientUpstream sends requests with an HTTP client.
type clientUpstream struct{ c *http.Client }

func (u clientUpstream) RoundTrip(r *http.Request) (*http.Response, error) { return u.c.Do(r) }

// handlerUpstream runs an http.Handler in process and streams its answer
// back as a response.
type handlerUpstream struct{ h http.Handler }

func (u handlerUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			w.start(http.StatusOK)
			_ = pw.Close()
		}()
		u.h.ServeHTTP(w, req)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		_ = pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	return &http.Response{StatusCode: w.status, Header: w.sent, Body: pr, Request: req,
		ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1}, nil
}

type pipeWriter struct {
	header http.Header
	sent   http.Header
	pw     *io.PipeWriter
	once   sync.Once
	status int
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) start(status int) {
	w.once.Do(func() {
		w.status, w.sent = status, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) WriteHeader(status int) { w.start(status) }

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.start(http.StatusOK)
	return w.pw.Write(b)
}

// Flush is a no-op: every Write is delivered through the pipe at once.
func (w *pipeWriter) Flush() {}

// requestHeaders are the only client headers passed upstream. Everything
// else — the agent's Authorization header above all, cookies, hop-by-hop
// and forwarding headers — stops at the gateway. Content-Type is the
// gateway's own: it describes the body the gateway checked and encoded.
var requestHeaders = []string{"Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID"}

// responseDropped are upstream headers never passed to the agent.
var responseDropped = map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Set-Cookie": true, "Www-Authenticate": true, "Alt-Svc": true}

// SecretSource reveals upstream credentials to the gateway.
type SecretSource interface {
	Reveal(ctx context.Context, name string) ([]byte, error)
}

// secretCache keeps revealed secrets briefly so that each call does not ask
// the control plane; a changed secret is picked up within secretTTL.
type secretCache struct {
	src   SecretSource
	clock clock.Clock
	mu    sync.Mutex
	vals  map[string]cachedSecret
}

type cachedSecret struct {
	v  []byte
	at time.Time
}

const secretTTL = 30 * time.Second

func (c *secretCache) get(ctx context.Context, name string) ([]byte, error) {
	if c.src == nil {
		return nil, errors.New("gateway: no secret source configured")
	}
	now := c.clock.Now()
	c.mu.Lock()
	e, ok := c.vals[name]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < secretTTL && now.Sub(e.at) >= 0 {
		return e.v, nil
	}
	v, err := c.src.Reveal(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("gateway: credential %q: %w", name, err)
	}
	c.mu.Lock()
	if c.vals == nil {
		c.vals = map[string]cachedSecret{}
	}
	c.vals[name] = cachedSecret{v: v, at: now}
	c.mu.Unlock()
	return v, nil
}

// known returns the cached secret values, for redaction.
func (c *secretCache) known() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]byte, 0, len(c.vals))
	for _, e := range c.vals {
		if len(e.v) >= 4 {
			out = append(out, e.v)
		}
	}
	return out
}

// outbound builds the upstream request: allow-listed headers only, the
// injected credential, and a body of exactly the bytes the gateway checked.
func (g *Gateway) outbound(ctx context.Context, s *Server, out outbound, in http.Header) (*http.Request, error) {
	var rd io.Reader
	if out.body != nil {
		rd = bytes.NewReader(out.body)
	}
	req, err := http.NewRequestWithContext(ctx, out.method, out.target, rd)
	if err != nil {
		return nil, fmt.Errorf("gateway: upstream request: %w", err)
	}
	for _, h := range requestHeaders {
		if out.modern && (h == "Mcp-Session-Id" || h == "Last-Event-ID") {
			// MCP 2026-07-28 has neither sessions nor resumable streams.
			continue
		}
		if v := in.Values(h); len(v) > 0 {
			req.Header[h] = append([]string(nil), v...)
		}
	}
	for k, v := range out.header {
		req.Header[k] = append([]string(nil), v...)
	}
	if out.contentType != "" {
		req.Header.Set("Content-Type", out.contentType)
	}
	if cr := s.Credentials; cr != nil {
		if err := g.injectCredential(ctx, req.Header, cr); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// injectCredential sets cr's header, its secret in its format, on h.
func (g *Gateway) injectCredential(ctx context.Context, h http.Header, cr *Credentials) error {
	v, err := g.secrets.get(ctx, cr.Secret)
	if err != nil {
		return err
	}
	if bytes.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("gateway: credential %q holds a line break and cannot be sent as a header", cr.Secret)
	}
	h.Set(cr.Header, strings.Replace(cr.Format, "{secret}", string(v), 1))
	return nil
}

// copyResponseHeaders passes upstream headers to the agent, minus
// hop-by-hop ones and any that carry an injected secret.
func (g *Gateway) copyResponseHeaders(dst, src http.Header, forms [][]byte) {
	for k, vs := range src {
		if responseDropped[http.CanonicalHeaderKey(k)] {
			continue
		}
		for _, v := range vs {
			if containsAny([]byte(v), forms) {
				continue
			}
			dst.Add(k, v)
		}
	}
}

func containsAny(b []byte, needles [][]byte) bool {
	for _, n := range needles {
		if bytes.Contains(b, n) {
			return true
		}
	}
	return false
}
