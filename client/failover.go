package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
)

// Failover is an http.RoundTripper for a control plane run as several
// replicas. Every replica presents the same SPIFFE ID, so the pinning of the
// transport it wraps accepts any of them; Failover only picks which one a
// request goes to.
//
// Requests are built against any of the bases (by convention the first, see
// Client.Bases); Failover rewrites the scheme and host of a request for a
// base to the currently preferred one. When sending fails with a transport
// error (no HTTP response), the preference moves to the next base, so the
// next request goes elsewhere, and the request itself is retried there if
// that is safe:
//
//   - GET, HEAD and OPTIONS are retried on every base in turn;
//   - other methods only if their body can be replayed (GetBody, or no
//     body) and the failure came before anything was sent: a dial error,
//     or a TLS handshake that failed before a connection was had.
//
// An HTTP response, whatever its status, is returned as is: a replica that
// answered has decided. A request whose context was canceled is not held
// against the replica. A preference that works sticks. Requests for other
// hosts pass through untouched. Safe for concurrent use.
type Failover struct {
	bases []*url.URL
	next  http.RoundTripper
	cur   atomic.Int32 // index into bases of the preferred one
}

var _ http.RoundTripper = (*Failover)(nil)

// NewFailover returns a Failover over bases (absolute https URLs, no two on
// the same host, all with the same path) that sends through next (nil:
// http.DefaultTransport). Use it to give failover to an http.Client of
// one's own, with the bases of a Client: NewFailover(c.Bases(), tr).
func NewFailover(bases []string, next http.RoundTripper) (*Failover, error) {
	us, err := checkServerURLs(bases)
	if err != nil {
		return nil, err
	}
	return newFailover(us, next), nil
}

func newFailover(bases []*url.URL, next http.RoundTripper) *Failover {
	if next == nil {
		next = http.DefaultTransport
	}
	return &Failover{bases: bases, next: next}
}

// Bases returns the base URLs in order of preference when all are up.
func (f *Failover) Bases() []string {
	out := make([]string, len(f.bases))
	for i, u := range f.bases {
		out[i] = u.String()
	}
	return out
}

// Current returns the base requests go to now.
func (f *Failover) Current() string { return f.bases[f.cur.Load()].String() }

// CloseIdleConnections forwards to the wrapped transport (a Client relies on
// it to switch to a rotated SVID's connections).
func (f *Failover) CloseIdleConnections() {
	if c, ok := f.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// RoundTrip implements http.RoundTripper; see Failover.
func (f *Failover) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(f.bases) == 1 || f.index(req.URL) < 0 {
		return f.next.RoundTrip(req)
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	idempotent := req.Method == "" || req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions
	n := len(f.bases)
	start := int(f.cur.Load())
	var errs []error // one per replica tried, naming it
	for k := range n {
		i := (start + k) % n
		var tr *sendTrace
		if !idempotent && replayable {
			tr = new(sendTrace)
		}
		out, err := f.attempt(req, i, k > 0, tr)
		if err != nil {
			return nil, err
		}
		resp, err := f.next.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", f.bases[i].Host, err))
		ctxErr := req.Context().Err()
		if errors.Is(ctxErr, context.Canceled) {
			// The caller gave up; that says nothing of the replica.
			break
		}
		// Move on from i unless a concurrent failure already did: two
		// requests failing on the same base must not skip the next one.
		f.cur.CompareAndSwap(int32(i), int32((i+1)%n))
		if ctxErr != nil || !replayable || !(idempotent || tr.beforeSend(err)) {
			break
		}
	}
	if len(errs) == 1 {
		if hostKey(req.URL) == hostKey(f.bases[start]) {
			return nil, errors.Unwrap(errs[0]) // the transport's error, as without failover
		}
		return nil, errs[0] // naming the replica, which the request's URL does not
	}
	return nil, fmt.Errorf("client: no control plane replica answered: %w", errors.Join(errs...))
}

// attempt is req for base i. A retry gets a fresh body (the transport closed
// the previous one); tr, if set, records how far sending got.
func (f *Failover) attempt(req *http.Request, i int, retry bool, tr *sendTrace) (*http.Request, error) {
	ctx := req.Context()
	if tr != nil {
		ctx = httptrace.WithClientTrace(ctx, tr.hooks())
	}
	out := req.Clone(ctx)
	if retry && req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("client: replay request body: %w", err)
		}
		out.Body = body
	}
	b := f.bases[i]
	if out.Host == "" || out.Host == req.URL.Host {
		out.Host = b.Host
	}
	out.URL.Scheme, out.URL.Host = b.Scheme, b.Host
	return out, nil
}

// index is the base u is for, or -1.
func (f *Failover) index(u *url.URL) int {
	if u.Scheme != "https" {
		return -1
	}
	h := hostKey(u)
	for i, b := range f.bases {
		if hostKey(b) == h {
			return i
		}
	}
	return -1
}

// hostKey identifies a host:port however it is spelled.
func hostKey(u *url.URL) string {
	return strings.TrimSuffix(strings.ToLower(u.Host), ":443")
}

// sendTrace tells whether a failed request could have reached the server.
type sendTrace struct {
	gotConn, handshakeFailed atomic.Bool
}

func (t *sendTrace) hooks() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { t.gotConn.Store(true) },
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err != nil {
				t.handshakeFailed.Store(true)
			}
		},
	}
}

// beforeSend reports whether err certainly came before any byte of the
// request was written: the dial failed, or the TLS handshake did and the
// request never had a connection. Anything else may have reached the
// server, which may have acted on it.
func (t *sendTrace) beforeSend(err error) bool {
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return t != nil && t.handshakeFailed.Load() && !t.gotConn.Load()
}

// parseServerURLs parses a comma-separated list of control plane URLs.
func parseServerURLs(s string) ([]*url.URL, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("client: no server URL")
	}
	return checkServerURLs(strings.Split(s, ","))
}

func checkServerURLs(list []string) ([]*url.URL, error) {
	if len(list) == 0 {
		return nil, errors.New("client: no server URL")
	}
	out := make([]*url.URL, 0, len(list))
	for i, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, fmt.Errorf("client: server URL #%d of %q is empty", i+1, strings.Join(list, ","))
		}
		u, err := parseServerURL(s)
		if err != nil {
			return nil, err
		}
		// Failover tells replicas apart by host and rewrites only the
		// host, so hosts must differ and paths must not.
		for _, o := range out {
			if hostKey(o) == hostKey(u) {
				return nil, fmt.Errorf("client: server URL %q repeats %q", s, o)
			}
			if o.Path != u.Path {
				return nil, fmt.Errorf("client: server URL %q has another path than %q; replicas must serve the API at the same path", s, o)
			}
		}
		out = append(out, u)
	}
	return out, nil
}
