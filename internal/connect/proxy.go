package connect

import (
	"bytes"
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

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// newHandler is the local edge: requests that could not come from the
// agent's own process are refused, then the rest is proxied.
func (s *Sidecar) newHandler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: s.gw,
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
		// The sidecar's own API; never proxied, and no proxied path
		// is under it.
		if isLocal(r) {
			s.local.ServeHTTP(w, r)
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
		if !httpx.LoopbackHost(host) {
			return http.StatusForbidden, fmt.Sprintf("bulkhead connect: Host %q is not a loopback name; use http://127.0.0.1:PORT or http://localhost:PORT", r.Host)
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return http.StatusForbidden, "bulkhead connect: requests from web pages of other sites are refused"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !httpx.LoopbackHost(u.Hostname()) {
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

// modifyResponse turns the gateway's refusal of the sidecar's own
// credentials (401) into 502: the local client cannot fix them, and must
// not start an OAuth flow of its own. The cached token is dropped so that
// the next request fetches a fresh one (client.GatewayTransport does that;
// after the agent's revocation the control plane says so).
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
	var te *client.TokenError
	switch {
	case errors.As(err, &te):
		task := s.gw.Task()
		s.cfg.Logger.Error("no access token; request not forwarded", "resource", s.cfg.Resource, "task", task, "path", r.URL.Path, "err", te.Err)
		msg := fmt.Sprintf("bulkhead connect: no access token for %s: %v", s.cfg.Resource, te.Err)
		if task != "" {
			msg += fmt.Sprintf("; the tokens carry task %s: if it has ended, complete it (POST %sv1/task/complete) to return to baseline, or open another (POST %sv1/task)", task, LocalPrefix, LocalPrefix)
		}
		writeError(w, http.StatusBadGateway, "token_unavailable", msg)
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
