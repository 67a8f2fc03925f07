package gateway

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
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
		r, params := matchRoute(routes, c.method, strings.Split(strings.TrimPrefix(c.path, "/"), "/"))
		got := ""
		if r != nil {
			got = r.Name
		}
		if got != c.want || (c.param != "" && params["id"] != c.param) {
			t.Errorf("%s %s → %q %v, want %q", c.method, c.path, got, params, c.want)
		}
	}
}

// FuzzForwardedMeansWhatPolicySaw feeds arbitrary bodies to the parser and
// the classifier. For every message the gateway would forward, it reads the
// forwarded bytes with three parsers that resolve JSON's open questions
// differently — encoding/json (keys matched without regard to case, the
// last duplicate wins), and two case-sensitive readers, one first-wins and
// one last-wins — and asserts that each reads the same method, tool name
// and arguments the policy decided on.
func FuzzForwardedMeansWhatPolicySaw(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping","params":{"name":"read_file"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","Name":"delete_file","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"p":1},"arguments":{"p":2}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Arguments":{"p":2}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"p":"\u00e9\ud83d\ude00"}}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":"a","result":{}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"x"}}}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"ping"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, rerr := rpcmsg.Parse(b, maxDepth)
		if rerr != nil {
			return
		}
		for _, rev := range []revision{{}, {version: revisionModern, modern: true}} {
			checkForwarded(t, m, rev)
		}
	})
}

// checkForwarded reads the message the gateway would forward for m with
// three parsers and compares with what the policy saw.
func checkForwarded(t *testing.T, m *rpcmsg.Message, rev revision) {
	call, cerr := classify("files", m, rev)
	if cerr != nil {
		return
	}
	fwd := m.Encode()
	{
		for _, rd := range []struct {
			name string
			read func([]byte) (readView, error)
		}{{"encoding/json", readStd}, {"first-wins", readTokens(false)}, {"last-wins", readTokens(true)}} {
			v, err := rd.read(fwd)
			if err != nil {
				t.Fatalf("%s cannot read the forwarded %q: %v", rd.name, fwd, err)
			}
			if v.method != m.Method {
				t.Fatalf("%s reads method %q from %q; the gateway classified %q", rd.name, v.method, fwd, m.Method)
			}
			if call.action != "call_tool" {
				continue
			}
			if want := `Tool::"files/` + v.name + `"`; call.resource.String() != want {
				t.Fatalf("%s reads tool %q from %q; the policy saw %s", rd.name, v.name, fwd, call.resource)
			}
			saw, err := decodeAny(call.input)
			if err != nil {
				t.Fatal(err)
			}
			if v.args == nil {
				v.args = map[string]any{}
			}
			if !reflect.DeepEqual(saw, v.args) {
				t.Fatalf("%s reads arguments %#v from %q; the policy saw %#v", rd.name, v.args, fwd, saw)
			}
		}
	}
}

// readView is what an upstream reads from a forwarded message.
type readView struct {
	method, name string
	args         any
}

// readStd reads like a Go upstream using encoding/json with structs.
func readStd(b []byte) (readView, error) {
	var m struct {
		Method string `json:"method"`
		Params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"params"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return readView{}, err
	}
	v := readView{method: m.Method, name: m.Params.Name}
	if len(m.Params.Arguments) > 0 && string(m.Params.Arguments) != "null" {
		a, err := decodeAny(m.Params.Arguments)
		if err != nil {
			return readView{}, err
		}
		v.args = a
	}
	return v, nil
}

// readTokens reads case-sensitively, keeping the first or the last of
// duplicate keys at every depth (as JavaScript and Python do: last).
func readTokens(lastWins bool) func([]byte) (readView, error) {
	return func(b []byte) (readView, error) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		v, err := readValue(dec, lastWins)
		if err != nil {
			return readView{}, err
		}
		top, _ := v.(map[string]any)
		out := readView{}
		out.method, _ = top["method"].(string)
		if p, ok := top["params"].(map[string]any); ok {
			out.name, _ = p["name"].(string)
			if a, ok := p["arguments"]; ok && a != nil {
				out.args = a
			}
		}
		return out, nil
	}
}

func readValue(dec *json.Decoder, lastWins bool) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			var out []any
			for dec.More() {
				v, err := readValue(dec, lastWins)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			_, err := dec.Token()
			return out, err
		}
		out := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k := kt.(string)
			v, err := readValue(dec, lastWins)
			if err != nil {
				return nil, err
			}
			if _, seen := out[k]; !seen || lastWins {
				out[k] = v
			}
		}
		_, err := dec.Token()
		return out, err
	}
	return tok, nil
}

func decodeAny(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func TestSandboxConfig(t *testing.T) {
	parse := func(sb string) (*Config, error) {
		return ParseConfig([]byte("servers:\n  - name: s\n    mcp: { command: [/bin/true]"+sb+" }\n    callers: [spiffe://td/agent/*]\n"), nil)
	}
	c, err := parse(", sandbox: none")
	if err != nil || !c.Servers[0].MCP.Sandbox.None {
		t.Fatalf("none: %+v %v", c, err)
	}
	c, err = parse(", sandbox: { read: [/srv], egress: [api.example.com:443], pids: 8 }")
	if err != nil || c.Servers[0].MCP.Sandbox.Egress[0] != "api.example.com:443" || c.Servers[0].MCP.Sandbox.Pids != 8 {
		t.Fatalf("mapping: %+v %v", c.Servers[0].MCP.Sandbox, err)
	}
	c, err = parse(", sandbox: { egress: none }")
	if err != nil || len(c.Servers[0].MCP.Sandbox.Egress) != 0 {
		t.Fatalf("egress none: %+v %v", c.Servers[0].MCP.Sandbox, err)
	}
	c, err = parse(`, sandbox: { egress: ["api:80"], egress_credentials: { "api:80": { header: Authorization, secret: k } } }`)
	if err != nil || c.Servers[0].MCP.Sandbox.EgressCredentials["api:80"].Format != "Bearer {secret}" {
		t.Fatalf("egress credentials: %+v %v", c.Servers[0].MCP.Sandbox, err)
	}
	for _, bad := range []string{", sandbox: off", ", sandbox: { reed: [/srv] }",
		`, sandbox: { egress: ["api:80"], egress_credentials: { "other:80": { header: X-Key, secret: k } } }`,
		`, sandbox: { egress: ["api:80"], egress_credentials: { "api:80": { header: Host, secret: k } } }`} {
		if _, err := parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseConfig([]byte("servers:\n  - name: s\n    mcp: { url: http://x/mcp, sandbox: none }\n    callers: [spiffe://td/agent/*]\n"), nil); err == nil || !strings.Contains(err.Error(), "stdio") {
		t.Errorf("a sandbox on a URL server: %v", err)
	}
	if _, err := confinement(&MCP{Command: []string{"/bin/true"}, Sandbox: &Sandbox{Egress: []string{"no-port"}}}, nil, nil); err == nil {
		t.Error("an egress entry without a port was accepted")
	}
}
