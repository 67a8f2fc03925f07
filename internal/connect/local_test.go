package connect

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

func TestCheckLocal(t *testing.T) {
	cases := []struct {
		name   string
		method string
		target string
		host   string
		header map[string]string
		status int
		want   string
	}{
		{name: "MCP client", target: "/mcp/files", host: "127.0.0.1:7070"},
		{name: "localhost", target: "/mcp/files", host: "localhost:7070"},
		{name: "IPv6 loopback", target: "/http/billing/v1/invoices", host: "[::1]:7070"},
		{name: "no port", target: "/mcp/files", host: "127.0.0.1"},
		{name: "same-origin page", target: "/mcp/files", host: "127.0.0.1:7070", header: map[string]string{"Origin": "http://127.0.0.1:7070", "Sec-Fetch-Site": "same-origin"}},
		{name: "rebound name", target: "/mcp/files", host: "attacker.example:7070", status: 403, want: "not a loopback name"},
		{name: "private address", target: "/mcp/files", host: "10.0.0.1:7070", status: 403, want: "not a loopback name"},
		{name: "localhost lookalike", target: "/mcp/files", host: "localhost.attacker.example", status: 403, want: "not a loopback name"},
		{name: "absolute form", target: "http://gateway.example/mcp/files", host: "gateway.example", status: 400, want: "not a forward proxy"},
		{name: "CONNECT", method: http.MethodConnect, target: "/", host: "127.0.0.1:7070", status: 405, want: "CONNECT"},
		{name: "cross-site fetch", target: "/mcp/files", host: "127.0.0.1:7070", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, want: "other sites"},
		{name: "remote origin", target: "/mcp/files", host: "127.0.0.1:7070", header: map[string]string{"Origin": "https://attacker.example"}, status: 403, want: "not a loopback origin"},
		{name: "null origin", target: "/mcp/files", host: "127.0.0.1:7070", header: map[string]string{"Origin": "null"}, status: 403, want: "not a loopback origin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, c.target, nil)
			r.Host = c.host
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			status, msg := checkLocal(r)
			if status != c.status || !strings.Contains(msg, c.want) {
				t.Fatalf("checkLocal = %d %q, want %d %q", status, msg, c.status, c.want)
			}
		})
	}
}

func TestRewriteSendsOnlyToTheGatewayWithoutLocalCredentials(t *testing.T) {
	gw, _ := url.Parse("https://gateway.example:9443")
	s := &Sidecar{gateway: gw}
	in := httptest.NewRequest(http.MethodPost, "/mcp/files?x=1", nil)
	in.Host = "127.0.0.1:7070"
	for k, v := range map[string]string{"Authorization": "Bearer local", "Cookie": "a=b", "Proxy-Authorization": "Basic eDp4",
		"Proxy-Connection": "keep-alive", "Forwarded": "for=1.2.3.4", "X-Forwarded-Host": "evil.example",
		"Mcp-Session-Id": "abc", "Mcp-Protocol-Version": "2025-06-18", "Last-Event-Id": "7", "Accept": "text/event-stream"} {
		in.Header.Set(k, v)
	}
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	s.rewrite(pr)
	if got := pr.Out.URL.String(); got != "https://gateway.example:9443/mcp/files?x=1" {
		t.Fatalf("outbound URL %s", got)
	}
	if pr.Out.Host != "" {
		t.Fatalf("outbound Host %q, want the gateway's", pr.Out.Host)
	}
	for _, k := range []string{"Authorization", "Cookie", "Proxy-Authorization", "Proxy-Connection", "Forwarded", "X-Forwarded-Host"} {
		if v := pr.Out.Header.Get(k); v != "" {
			t.Errorf("%s forwarded: %q", k, v)
		}
	}
	for _, k := range []string{"Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id", "Accept"} {
		if pr.Out.Header.Get(k) == "" {
			t.Errorf("%s dropped", k)
		}
	}
}

// FuzzCheckLocal: whatever the Host and Origin, an accepted request names
// a loopback host.
func FuzzCheckLocal(f *testing.F) {
	for _, s := range [][2]string{{"127.0.0.1:7070", ""}, {"localhost", "http://localhost:3000"}, {"[::1]:1", "null"},
		{"evil.example", ""}, {"127.0.0.1.evil.example:80", ""}, {"[::ffff:127.0.0.1]:7070", ""}, {"", "http://[::1]"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, host, origin string) {
		r := httptest.NewRequest(http.MethodPost, "/mcp/files", nil)
		r.Host = host
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if status, _ := checkLocal(r); status != 0 || host == "" {
			return
		}
		h := host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			h = hh
		}
		if !httpx.LoopbackHost(h) {
			t.Fatalf("accepted Host %q", host)
		}
	})
}
