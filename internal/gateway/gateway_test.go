package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	good := `listen: 127.0.0.1:9443
servers:
  - name: files
    mcp: { url: http://127.0.0.1:3001/mcp }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
  - name: billing
    http:
      url: http://127.0.0.1:8080
      routes: [{ name: invoices, method: get, path: "/v1/invoices/{id}" }]
    callers: ["spiffe://bulkhead.local/agent/billing-bot"]
`
	c, err := ParseConfig([]byte(good), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Resource != "https://127.0.0.1:9443" || c.Servers[0].Credentials.Format != "Bearer {secret}" || c.Servers[1].HTTP.Routes[0].Method != "GET" {
		t.Fatalf("defaults not filled: %+v", c)
	}
	cases := []struct{ name, yaml, want string }{
		{"unknown top key", "bogus: 1\n" + good, `unknown key "bogus"`},
		{"unknown nested key", strings.Replace(good, "callers:", "callerz:", 1), "callerz"},
		{"no callers", "servers:\n  - name: a\n    mcp: { url: http://x/mcp }\n", "callers is required"},
		{"both kinds", "servers:\n  - name: a\n    mcp: { url: http://x }\n    http: { url: http://x, routes: [{name: r, method: GET, path: /}] }\n    callers: [spiffe://td/agent/*]\n", "exactly one of mcp or http"},
		{"url with credentials", "servers:\n  - name: a\n    mcp: { url: http://u:p@x/mcp }\n    callers: [spiffe://td/agent/*]\n", "without credentials"},
		{"smuggling header", "servers:\n  - name: a\n    mcp: { url: http://x/mcp }\n    callers: [spiffe://td/agent/*]\n    credentials: { header: Host, secret: s }\n", "not allowed"},
		{"format injection", "servers:\n  - name: a\n    mcp: { url: http://x/mcp }\n    callers: [spiffe://td/agent/*]\n    credentials: { header: X-Key, secret: s, format: \"a\\r\\nb {secret}\" }\n", "no newline"},
		{"http without routes", "servers:\n  - name: a\n    http: { url: http://x }\n    callers: [spiffe://td/agent/*]\n", "needs routes"},
		{"bad route", "servers:\n  - name: a\n    http: { url: http://x, routes: [{name: r, method: GET, path: \"/a/{b}c\"}] }\n    callers: [spiffe://td/agent/*]\n", "whole segment"},
		{"dot route", "servers:\n  - name: a\n    http: { url: http://x, routes: [{name: r, method: GET, path: /a/../b}] }\n    callers: [spiffe://td/agent/*]\n", "dot segment"},
		{"bad server name", "servers:\n  - name: a/b\n    mcp: { url: http://x }\n    callers: [spiffe://td/agent/*]\n", "server name"},
		{"no servers", "listen: 127.0.0.1:1\n", "no servers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(tc.yaml), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	// A key that is another command's flag is accepted when known says so.
	if _, err := ParseConfig([]byte("server: https://x\n"+good), func(k string) bool { return k == "server" }); err != nil {
		t.Fatal(err)
	}
}

func TestCallerAllowed(t *testing.T) {
	cases := []struct {
		patterns []string
		id       string
		want     bool
	}{
		{[]string{"spiffe://td/agent/*"}, "spiffe://td/agent/alpha", true},
		{[]string{"spiffe://td/agent/*"}, "spiffe://td/agent/alpha/sub/x", true},
		{[]string{"spiffe://td/agent/*"}, "spiffe://td/agent/", false},
		{[]string{"spiffe://td/agent/*"}, "spiffe://td/operator/admin", false},
		{[]string{"spiffe://td/agent/*"}, "spiffe://evil/agent/alpha", false},
		{[]string{"spiffe://td/agent/billing-bot"}, "spiffe://td/agent/billing-bot", true},
		{[]string{"spiffe://td/agent/billing-bot"}, "spiffe://td/agent/billing-bot/sub/x", false},
		{[]string{"spiffe://td/agent/*/sub/worker"}, "spiffe://td/agent/a/sub/worker", true},
		{[]string{"spiffe://td/agent/*/sub/worker"}, "spiffe://td/agent/a/b/sub/worker", false},
		{nil, "spiffe://td/agent/alpha", false},
	}
	for _, c := range cases {
		if got := CallerAllowed(c.patterns, c.id); got != c.want {
			t.Errorf("CallerAllowed(%v, %s) = %v", c.patterns, c.id, got)
		}
	}
}

func TestMatchRoute(t *testing.T) {
	routes := []Route{{Name: "list", Method: "GET", Path: "/v1/invoices"}, {Name: "get", Method: "GET", Path: "/v1/invoices/{id}"},
		{Name: "refund", Method: "POST", Path: "/v1/invoices/{id}/refund"}}
	cases := []struct{ method, path, want, param string }{
		{"GET", "/v1/invoices", "list", ""},
		{"GET", "/v1/invoices/42", "get", "42"},
		{"POST", "/v1/invoices/42/refund", "refund", "42"},
		{"GET", "/v1/invoices/42/refund", "", ""},
		{"DELETE", "/v1/invoices/42", "", ""},
		{"GET", "/v1/invoices/", "", ""},
		{"GET", "/v1", "", ""},
	}
	for _, c := range cases {
		r, params := matchRoute(routes, c.method, c.path)
		got := ""
		if r != nil {
			got = r.Name
		}
		if got != c.want || (c.param != "" && params["id"] != c.param) {
			t.Errorf("%s %s → %q %v, want %q", c.method, c.path, got, params, c.want)
		}
	}
}

// FuzzParseRPC feeds arbitrary bodies to the JSON-RPC parser and the
// method classifier: never a panic, and anything accepted is one message
// of sane shape whose tool call, if any, names a valid tool.
func FuzzParseRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/x"}}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":"a","result":{}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"x"}}}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"ping"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, rerr := parseRPC(b)
		if rerr != nil {
			if _, err := json.Marshal(rerr); err != nil {
				t.Fatal(err)
			}
			return
		}
		if m.JSONRPC != "2.0" || (m.Method == "" && len(m.ID) == 0) {
			t.Fatalf("accepted a malformed message: %q", b)
		}
		az, cerr := classify("files", m)
		if cerr == nil && az.action == "call_tool" {
			if !strings.HasPrefix(az.resource.String(), `Tool::"files/`) || strings.Count(az.resource.String(), "/") != 1 {
				t.Fatalf("tool resource %s escapes its server", az.resource)
			}
			if len(az.input) == 0 || az.input[0] != '{' {
				t.Fatalf("input %q is not an object", az.input)
			}
		}
	})
}
