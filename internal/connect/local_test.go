package connect

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

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

func TestIsLocal(t *testing.T) {
	for _, c := range []struct {
		path string
		want bool
	}{
		{"/.bulkhead/v1/task", true},
		{"/.bulkhead/", true},
		{"/.bulkhead", true},
		{"/.bulkheadx/v1/task", false},
		{"/.bulkhead-v1/task", false},
		{"/mcp/files", false},
		{"/mcp/.bulkhead/v1/task", false},
		{"/http/billing/.bulkhead/v1/task", false},
		{"/.well-known/oauth-protected-resource", false},
		{"/", false},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7070"+c.path, nil)
		if got := isLocal(r); got != c.want {
			t.Errorf("isLocal(%s) = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestCheckLocalAPI(t *testing.T) {
	s := &Sidecar{cfg: Config{Listen: "127.0.0.1:7070"}}
	cases := []struct {
		name, remote, host string
		header             map[string]string
		status             int
		want               string
	}{
		{name: "the agent", remote: "127.0.0.1:50000", host: "127.0.0.1:7070", header: map[string]string{LocalHeader: "1"}},
		{name: "the agent, localhost", remote: "127.0.0.1:50000", host: "localhost:7070", header: map[string]string{LocalHeader: "1"}},
		{name: "the agent, IPv6 loopback peer", remote: "[::1]:50000", host: "127.0.0.1:7070", header: map[string]string{LocalHeader: "1"}},
		{name: "from the LAN", remote: "192.168.1.20:50000", host: "127.0.0.1:7070", header: map[string]string{LocalHeader: "1"}, status: 403, want: "over loopback"},
		{name: "unparsable peer", remote: "pipe", host: "127.0.0.1:7070", header: map[string]string{LocalHeader: "1"}, status: 403, want: "over loopback"},
		{name: "loopback origin", remote: "127.0.0.1:50000", host: "127.0.0.1:7070", header: map[string]string{LocalHeader: "1", "Origin": "http://127.0.0.1:7070"}, status: 403, want: "web pages"},
		{name: "fetch metadata", remote: "127.0.0.1:50000", host: "127.0.0.1:7070", header: map[string]string{LocalHeader: "1", "Sec-Fetch-Mode": "cors"}, status: 403, want: "browsers"},
		{name: "other port", remote: "127.0.0.1:50000", host: "127.0.0.1:8080", header: map[string]string{LocalHeader: "1"}, status: 403, want: "not the sidecar's address"},
		{name: "rebound name", remote: "127.0.0.1:50000", host: "evil.example:7070", header: map[string]string{LocalHeader: "1"}, status: 403, want: "not the sidecar's address"},
		{name: "empty Host", remote: "127.0.0.1:50000", host: "", header: map[string]string{LocalHeader: "1"}, status: 403, want: "not the sidecar's address"},
		{name: "no header", remote: "127.0.0.1:50000", host: "127.0.0.1:7070", status: 403, want: "needs the header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/.bulkhead/v1/task", nil)
			r.RemoteAddr, r.Host = c.remote, c.host
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			status, msg := s.checkLocalAPI(r)
			if status != c.status || !strings.Contains(msg, c.want) {
				t.Fatalf("checkLocalAPI = %d %q, want %d %q", status, msg, c.status, c.want)
			}
		})
	}
}

// FuzzCheckLocalAPI: whatever the peer, Host and Origin, an accepted
// request comes from loopback, carries no Origin, and names the sidecar's
// port on a loopback host.
func FuzzCheckLocalAPI(f *testing.F) {
	for _, s := range [][3]string{{"127.0.0.1:1", "127.0.0.1:7070", ""}, {"[::1]:1", "localhost:7070", ""},
		{"[::ffff:127.0.0.1]:1", "[::1]:7070", "null"}, {"10.0.0.1:1", "127.0.0.1:7070", ""}, {"127.0.0.1:1", "127.0.0.1.evil:7070", ""}} {
		f.Add(s[0], s[1], s[2])
	}
	sc := &Sidecar{cfg: Config{Listen: "127.0.0.1:7070"}}
	f.Fuzz(func(t *testing.T, remote, host, origin string) {
		r := httptest.NewRequest(http.MethodGet, "/.bulkhead/v1/task", nil)
		r.RemoteAddr, r.Host = remote, host
		r.Header.Set(LocalHeader, "1")
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if status, _ := sc.checkLocalAPI(r); status != 0 {
			return
		}
		ap, err := netip.ParseAddrPort(remote)
		if err != nil || !ap.Addr().Unmap().IsLoopback() || origin != "" {
			t.Fatalf("accepted peer %q with Origin %q", remote, origin)
		}
		h, p, err := net.SplitHostPort(host)
		if err != nil || p != "7070" || !httpx.LoopbackHost(h) {
			t.Fatalf("accepted Host %q", host)
		}
	})
}

// docs/connect-openapi.yaml documents exactly the local API's endpoints.
func TestOpenAPIDocumentsTheLocalAPI(t *testing.T) {
	b, err := os.ReadFile("../../docs/connect-openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q, want 3.1", doc.OpenAPI)
	}
	var documented, served []string
	for p, ops := range doc.Paths {
		for m := range ops {
			if m != "parameters" {
				documented = append(documented, strings.ToUpper(m)+" "+p)
			}
		}
	}
	for _, rt := range (&Sidecar{}).localRoutes() {
		served = append(served, rt.method+" "+rt.path)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("documented %v\nserved     %v", documented, served)
	}
}
