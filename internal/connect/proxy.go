package connect

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulkhead-dev/bulkhead/client"
)

// newHandler is the local edge: requests that could not come from the
// agent's own process are refused, then the rest is proxied.
func (s *Sidecar) newHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: roundTripFunc(s.roundTrip),
		// MCP streams and notifications pass through as they come.
		FlushInterval:  -1,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	// A web page in a browser on this host can also reach loopback; it
	// must not be able to act as the agent (CSRF).
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "refused", "bulkhead connect: cross-origin requests from web pages are refused")
	}))
	next := cop.Handler(rp)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := checkLocal(r); status != 0 {
			s.cfg.Logger.Warn("local request refused", "method", r.Method, "host", r.Host, "path", r.URL.Path, "reason", msg)
			writeError(w, status, "refused", msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkLocal refuses what the agent's own HTTP client never sends: proxy
// requests (absolute-form targets, CONNECT), host names other than
// loopback ones (DNS rebinding: a page served from evil.example, resolved
// to 127.0.0.1, would be same-origin with the sidecar), and requests a
// browser marks as coming from another site.
func checkLocal(r *http.Request) (int, string) {
	if r.Method == http.MethodConnect {
		return http.StatusMethodNotAllowed, "bulkhead connect: not a forward proxy, CONNECT is refused"
	}
	if r.URL.IsAbs() || r.URL.Host != "" || !strings.HasPrefix(r.RequestURI, "/") {
		return http.StatusBadRequest, "bulkhead connect: not a forward proxy; send origin-form requests (POST /mcp/NAME), which all go to its gateway"
	}
	if r.Host != "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
		if !loopbackHost(host) {
			return http.StatusForbidden, fmt.Sprintf("bulkhead connect: Host %q is not a loopback name; use http://127.0.0.1:PORT or http://localhost:PORT", r.Host)
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return http.StatusForbidden, "bulkhead connect: requests from web pages of other sites are refused"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !loopbackHost(u.Hostname()) {
			return http.StatusForbidden, fmt.Sprintf("bulkhead connect: Origin %q is not a loopback origin; requests from web pages are refused", o)
		}
	}
	return 0, ""
}

// rewrite sends the request to the gateway (whatever the local Host or
// target said) and drops every credential or proxy header the local client
// set: only the sidecar's token goes out.
func (s *Sidecar) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(s.gateway)
	for k := range pr.Out.Header {
		if droppedHeader(k) {
			delete(pr.Out.Header, k)
		}
	}
}

func droppedHeader(k string) bool {
	k = http.CanonicalHeaderKey(k)
	switch k {
	case "Authorization", "Cookie", "Forwarded":
		return true
	}
	return strings.HasPrefix(k, "Proxy-") || strings.HasPrefix(k, "X-Forwarded-")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// tokenError is a failure to obtain an access token.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return "connect: access token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// roundTrip adds the token and sends the request over a connection that
// presents exactly the certificate the token is bound to. The two are read
// separately, so a rotation between the reads is seen as a mismatch and
// both are read again.
func (s *Sidecar) roundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		g := s.generation()
		tok, err := s.tokens.Load().Token()
		if err != nil {
			closeBody(req)
			return nil, &tokenError{err}
		}
		if s.cnf(tok.AccessToken) == g.x5t {
			out := req.Clone(req.Context())
			out.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			return g.hc.Transport.RoundTrip(out)
		}
		if attempt == 2 {
			closeBody(req)
			return nil, &tokenError{errors.New("the control plane issued a token bound to another certificate than the current SVID")}
		}
	}
}

// closeBody honours the RoundTripper contract on requests not sent.
func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

// generation is one SVID and the gateway connections that present it.
// Every rotation starts a new generation with its own connection pool, so
// a connection made with the old certificate never carries a token bound
// to the new one. CloseIdleConnections alone would not do: over HTTP/2 a
// connection busy with a long MCP stream is never idle, and new requests
// would be multiplexed onto it.
type generation struct {
	leaf *x509.Certificate
	x5t  string
	hc   *http.Client
}

// generation returns the generation of the rotating Source's current SVID,
// starting it if the SVID has changed.
func (s *Sidecar) generation() *generation {
	src := s.rot.Source()
	svid, _ := src.GetX509SVID()
	leaf := svid.Certificates[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != nil && s.gen.leaf.Equal(leaf) {
		return s.gen
	}
	bundle, _ := src.GetX509BundleForTrustDomain(s.td)
	// The TLS client presents this generation's SVID and verifies the
	// gateway against the rotating Source's bundle, pinned by SPIFFE ID.
	hc := client.NewHTTPClient(client.NewSource(svid, bundle), client.AuthorizeGateways(s.td, s.cfg.GatewayName))
	if tr, ok := hc.Transport.(*http.Transport); ok {
		tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = tlsTimeout
		tr.ResponseHeaderTimeout = responseHeaderTimeout
		tr.ExpectContinueTimeout = time.Second
		// Connections of an old generation close once their streams end.
		tr.IdleConnTimeout = idleTimeout
	}
	old := s.gen
	s.gen = &generation{leaf: leaf, x5t: thumbprint(leaf), hc: hc}
	if old != nil {
		old.hc.CloseIdleConnections()
		s.cfg.Logger.Info("new gateway connections use the rotated SVID", "spiffe_id", svid.ID, "serial", leaf.SerialNumber.Text(16))
	}
	return s.gen
}

// resetTokens drops the cached token; the next request fetches a new one.
func (s *Sidecar) resetTokens() {
	s.tokens.Store(s.rot.Client().TokenSource(s.cfg.Resource, s.cfg.Scopes...))
}

// boundToken caches the cnf of the last token seen, so that it is parsed
// once per token rather than once per request.
type boundToken struct{ raw, x5t string }

// cnf is the token's cnf.x5t#S256. It is read without verification: the
// token came from the control plane over a verified connection, and the
// gateway verifies it.
func (s *Sidecar) cnf(raw string) string {
	if b := s.lastTok.Load(); b != nil && b.raw == raw {
		return b.x5t
	}
	t, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.RS256, jose.PS256})
	if err != nil {
		return ""
	}
	var c struct {
		Cnf struct {
			X5T string `json:"x5t#S256"`
		} `json:"cnf"`
	}
	if t.UnsafeClaimsWithoutVerification(&c) != nil {
		return ""
	}
	s.lastTok.Store(&boundToken{raw: raw, x5t: c.Cnf.X5T})
	return c.Cnf.X5T
}

func thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// modifyResponse turns the gateway's refusal of the sidecar's own
// credentials (401) into 502: the local client cannot fix them, and must
// not start an OAuth flow of its own. The cached token is dropped so that
// the next request fetches a fresh one (after a token revocation that is
// enough; after the agent's revocation the control plane says so).
func (s *Sidecar) modifyResponse(resp *http.Response) error {
	if s.cfg.Logger.Enabled(resp.Request.Context(), slog.LevelDebug) {
		s.cfg.Logger.Debug("forwarded", "method", resp.Request.Method, "path", resp.Request.URL.Path, "status", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	s.resetTokens()
	s.cfg.Logger.Error("the gateway refused the agent's credentials", "gateway", s.cfg.GatewayURL, "path", resp.Request.URL.Path, "gateway_error", msg)
	body := errorBody("gateway_refused_credentials", "bulkhead connect: the gateway refused the agent's credentials: "+msg)
	resp.StatusCode, resp.Status = http.StatusBadGateway, "502 Bad Gateway"
	resp.Header = http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"},
		"Content-Length": {strconv.Itoa(len(body))}}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return nil
}

// proxyError answers a request that could not be forwarded.
func (s *Sidecar) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var te *tokenError
	switch {
	case errors.As(err, &te):
		s.cfg.Logger.Error("no access token; request not forwarded", "resource", s.cfg.Resource, "path", r.URL.Path, "err", te.err)
		writeError(w, http.StatusBadGateway, "token_unavailable",
			fmt.Sprintf("bulkhead connect: no access token for %s: %v", s.cfg.Resource, te.err))
	case r.Context().Err() != nil:
		// The local client went away or the sidecar is stopping; there is
		// no one to answer.
		w.WriteHeader(http.StatusBadGateway)
	default:
		s.cfg.Logger.Warn("gateway request failed", "gateway", s.cfg.GatewayURL, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusBadGateway, "gateway_unreachable",
			fmt.Sprintf("bulkhead connect: the gateway at %s could not be reached: %v", s.cfg.GatewayURL, err))
	}
}

// errorBody is the JSON error shape the gateway itself answers with.
func errorBody(code, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"code": code, "error": msg})
	return append(b, '\n')
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(errorBody(code, msg))
}
