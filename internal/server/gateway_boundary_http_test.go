package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// payEnv is a gateway in front of an HTTP API whose routes declare each
// kind of body, with policies that read the body: a forbid on a JSON
// amount, on a form field, and on an opaque body's size.
type payEnv struct {
	*gatewayEnv
	up *gatewaytest.HTTPServer
	hc *http.Client
}

func startPay(t *testing.T, extra string) *payEnv {
	t.Helper()
	up := gatewaytest.StartHTTP(t)
	e := startGateway(t, `  - name: pay
    http:
      url: `+up.URL+`
      routes:
        - { name: pay,    method: POST, path: /v1/pay }
        - { name: payform, method: POST, path: /v1/pay-form, body: form }
        - { name: upload, method: PUT,  path: "/v1/blobs/{id}", body: opaque }
        - { name: ping,   method: GET,  path: /v1/ping, body: none }
        - { name: item,   method: GET,  path: "/v1/items/{id}" }
    callers: ["spiffe://bulkhead.local/agent/*"]
`+extra)
	ctx := context.Background()
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var routes []api.ToolEntry
	for _, r := range []string{"pay", "payform", "upload", "ping", "item"} {
		routes = append(routes, api.ToolEntry{Name: r})
	}
	cat.Servers = append(cat.Servers, api.ToolServer{Name: "pay", Sensitivity: "low", Routes: routes})
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
	versions, err := e.Operator.PolicyVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil || versions.State.Live != 1 {
		t.Fatalf("live policy: %v", err)
	}
	files := append(live.Files, api.PolicyFile{Name: "pay.cedar", Content: `@id("pay-all")
permit (principal, action, resource in ToolServer::"pay");
@id("no-big-payments")
forbid (principal, action, resource == Route::"pay/pay")
when { context.input has body && context.input.body has amount && context.input.body.amount > 1000 };
@id("no-payments-to-attacker")
forbid (principal, action, resource == Route::"pay/payform")
when { context.input has body && context.input.body has to && context.input.body.to == "attacker" };
@id("no-big-uploads")
forbid (principal, action, resource == Route::"pay/upload")
when { context.input has body && context.input.body.size > 16 };
@id("no-admin-items")
forbid (principal, action, resource == Route::"pay/item")
when { context.input has params && context.input.params has id && context.input.params.id == "admin" };`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	hc, _ := e.agentHTTP(t, "payer", "")
	return &payEnv{gatewayEnv: e, up: up, hc: hc}
}

// send makes a request whose path (escaped, as sent) and headers the test
// controls, and returns the status and body.
func (p *payEnv) send(t *testing.T, method, escapedPath, rawQuery string, hdr http.Header, body string) (int, string) {
	t.Helper()
	u, err := url.Parse(p.GatewayURL)
	if err != nil {
		t.Fatal(err)
	}
	u.RawPath = "/http/pay" + escapedPath
	if u.Path, err = url.PathUnescape(u.RawPath); err != nil {
		t.Fatal(err)
	}
	u.RawQuery = rawQuery
	req, _ := http.NewRequest(method, u.String(), strings.NewReader(body))
	if body == "" {
		req.Body, req.ContentLength = nil, 0
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func ct(v ...string) http.Header { return http.Header{"Content-Type": v} }

// A compromised agent sends a body the policy would read as empty (or
// otherwise) while the upstream parses it: refused before the PDP with
// 415 or 400, recorded, never forwarded. The body the policy did read is
// forwarded in the canonical form of what it read.
func TestRouteBodyIsWhatPolicySaw(t *testing.T) {
	p := startPay(t, "")
	big := `{"amount":5000}`
	cases := []struct {
		name         string
		method, path string
		query        string
		hdr          http.Header
		body         string
		status       int
	}{
		{"text/plain", "POST", "/v1/pay", "", ct("text/plain"), big, 415},
		{"no type", "POST", "/v1/pay", "", nil, big, 415},
		{"merge-patch+json", "POST", "/v1/pay", "", ct("application/merge-patch+json"), big, 415},
		{"vendor +json", "POST", "/v1/pay", "", ct("application/vnd.api+json"), big, 415},
		{"upper case type", "POST", "/v1/pay", "", ct("Application/JSON"), big, 415},
		{"utf-16 charset", "POST", "/v1/pay", "", ct("application/json; charset=utf-16"), big, 415},
		{"multipart", "POST", "/v1/pay", "", ct("multipart/form-data; boundary=x"), "--x\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n5000\r\n--x--\r\n", 415},
		{"two types", "POST", "/v1/pay", "", ct("application/json", "text/plain"), big, 415},
		{"form to a JSON route", "POST", "/v1/pay", "", ct("application/x-www-form-urlencoded"), "amount=5000", 415},
		{"JSON to a form route", "POST", "/v1/pay-form", "", ct("application/json"), `{"to":"attacker"}`, 415},
		{"a body to a none route", "GET", "/v1/ping", "", ct("application/json"), `{}`, 415},
		{"duplicate JSON key", "POST", "/v1/pay", "", ct("application/json"), `{"amount":1,"amount":5000}`, 400},
		{"case-variant JSON key", "POST", "/v1/pay", "", ct("application/json"), `{"amount":1,"Amount":5000}`, 400},
		{"lone surrogate", "POST", "/v1/pay", "", ct("application/json"), `{"memo":"\ud800","amount":5000}`, 400},
		{"repeated form field", "POST", "/v1/pay-form", "", ct("application/x-www-form-urlencoded"), "to=bob&to=attacker", 400},
		{"form semicolon", "POST", "/v1/pay-form", "", ct("application/x-www-form-urlencoded"), "to=bob;to=attacker", 400},
		{"case-variant form field", "POST", "/v1/pay-form", "", ct("application/x-www-form-urlencoded"), "to=bob&TO=attacker", 400},
		{"repeated query", "GET", "/v1/items/1", "id=1&id=admin", nil, "", 400},
		{"query semicolon", "GET", "/v1/items/1", "a=1;b=2", nil, "", 400},
		{"big amount", "POST", "/v1/pay", "", ct("application/json"), big, 403},
		{"to the attacker", "POST", "/v1/pay-form", "", ct("application/x-www-form-urlencoded"), "to=attacker", 403},
		{"big upload", "PUT", "/v1/blobs/b1", "", ct("application/octet-stream"), strings.Repeat("z", 17), 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := p.up.Calls.Load()
			recorded := len(events(t, p.Env.Env, "gateway.http")) + len(events(t, p.Env.Env, "gateway."+c.method))
			status, body := p.send(t, c.method, c.path, c.query, c.hdr, c.body)
			if status != c.status {
				t.Fatalf("%d %s, want %d", status, body, c.status)
			}
			if p.up.Calls.Load() != before {
				t.Fatal("the request reached the upstream")
			}
			if n := len(events(t, p.Env.Env, "gateway.http")) + len(events(t, p.Env.Env, "gateway."+c.method)); n != recorded+1 {
				t.Fatalf("%d records for the refusal, want 1", n-recorded)
			}
		})
	}
	// What passes is forwarded as the policy read it, canonically encoded,
	// with the gateway's own Content-Type.
	for _, c := range []struct {
		name, method, path, query string
		hdr                       http.Header
		body                      string
		wantBody, wantQuery       string
		wantType                  string
	}{
		{"JSON", "POST", "/v1/pay", "", ct("application/json; charset=utf-8"), " {\"amount\" : 5, \"memo\":\"\\u0041\"} ", `{"amount":5,"memo":"A"}`, "", "application/json"},
		{"form", "POST", "/v1/pay-form", "", ct("application/x-www-form-urlencoded"), "to=b%6Fb+x&memo=a%2Bb", "to=bob%20x&memo=a%2Bb", "", "application/x-www-form-urlencoded"},
		{"opaque", "PUT", "/v1/blobs/b1", "", ct("image/png"), "\x89PNG small", "\x89PNG small", "", "image/png"},
		{"query", "GET", "/v1/items/7", "q=a+b&r=%7e", nil, "", "", "q=a%20b&r=~", ""},
	} {
		t.Run("forwarded "+c.name, func(t *testing.T) {
			status, body := p.send(t, c.method, c.path, c.query, c.hdr, c.body)
			if status != 200 {
				t.Fatalf("%d %s", status, body)
			}
			seen := p.up.Last.Load().(gatewaytest.Seen)
			if seen.Body != c.wantBody || seen.Query != c.wantQuery || seen.Header.Get("Content-Type") != c.wantType {
				t.Fatalf("upstream saw body %q query %q type %q", seen.Body, seen.Query, seen.Header.Get("Content-Type"))
			}
		})
	}
	// The opaque body's size and digest are what the policy saw.
	ev := lastEvent(t, p.Env.Env, "gateway.PUT")
	sum := sha256.Sum256([]byte("\x89PNG small"))
	want := `{"params":{"id":"b1"},"query":{},"body":{"sha256":"` + hex.EncodeToString(sum[:]) + `","size":10}}`
	if ev.Digests["arguments"] != audit.Digest([]byte(want)) {
		t.Fatalf("the opaque body's record digest is not of %s", want)
	}
}

// Paths the route table and the upstream could read differently are
// refused (400), recorded and never forwarded; a canonical path is
// forwarded byte for byte in its one canonical spelling.
func TestNonCanonicalPathsAreRefused(t *testing.T) {
	p := startPay(t, "")
	for _, path := range []string{
		"/v1/items/..%5cadmin", "/v1/items/a%5C..%5Cadmin", "/v1/items/a%2fadmin", "/v1/items/a%2Fadmin", "/v1/items/%2e%2e",
		"/v1/items/%252e%252e", "/v1/items/%c0%ae%c0%ae", "/v1/items/%ef%bc%8e%ef%bc%8e", "/v1/items/admin%00", "/v1/items/a%0d%0aX",
		"/v1/items/admin;jsessionid=1", "/v1/./items/admin", "/v1/items/1/..", "/v1/items/../items/admin", "/v1//items/admin",
		"/v1/items/adm%25in", "/v1/items/%e2%80%a4%e2%80%a4", "/v1/items/%ff",
	} {
		t.Run(path, func(t *testing.T) {
			before := p.up.Calls.Load()
			recorded := len(events(t, p.Env.Env, "gateway.http"))
			status, body := p.send(t, "GET", path, "", nil, "")
			if status != http.StatusBadRequest || !strings.Contains(body, "not canonical") {
				t.Fatalf("%d %s, want 400 naming the path as not canonical", status, body)
			}
			if p.up.Calls.Load() != before {
				t.Fatal("the request reached the upstream")
			}
			if len(events(t, p.Env.Env, "gateway.http")) != recorded+1 {
				t.Fatal("the refusal was not recorded")
			}
		})
	}
	// The policy's forbid on id "admin" holds for every spelling that
	// decodes to it: they are the same path to the policy and upstream.
	if status, _ := p.send(t, "GET", "/v1/items/%61dmin", "", nil, ""); status != http.StatusForbidden {
		t.Fatalf("an encoded admin: %d", status)
	}
	status, body := p.send(t, "GET", "/v1/items/caf%c3%a9%20x", "", nil, "")
	seen := p.up.Last.Load().(gatewaytest.Seen)
	if status != 200 || seen.Escaped != "/v1/items/caf%C3%A9%20x" || seen.Path != "/v1/items/café x" {
		t.Fatalf("%d %s; upstream saw %q (%q)", status, body, seen.Escaped, seen.Path)
	}
}

// If the decision's record cannot be made durable, nothing is counted or
// forwarded: the budget the failed attempt would have used is still there
// once the log is back.
//
// On SQLite a record is durable once in the audit journal; a database that
// refuses to take the log (here a trigger) stops the acknowledgements once
// an ingest has met the refusal. A call in between is acknowledged,
// forwarded and counted, with its record durable in the journal and in the
// log once the database takes it again.
func TestNothingIsSpentUnlessItsRecordIsDurable(t *testing.T) {
	const budget = 3
	p := startPay(t, "    budget: { calls: 3 }\n")
	ctx := context.Background()
	// The first call of three: the agent holds its token from here on.
	if status, body := p.send(t, "GET", "/v1/items/0", "", nil, ""); status != 200 {
		t.Fatalf("first call: %d %s", status, body)
	}
	forwarded := 1
	st := p.Env.Server.Store()
	db := st.SQL()
	if _, err := db.Exec(`CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit log down (test)'); END`); err != nil {
		t.Fatal(err)
	}
	before := p.up.Calls.Load()
	switch status, body := p.send(t, "GET", "/v1/items/1", "", nil, ""); status {
	case http.StatusOK: // acknowledged by the journal before any ingest met the trigger
		forwarded++
	case http.StatusServiceUnavailable:
		if p.up.Calls.Load() != before {
			t.Fatal("a call whose record failed reached the upstream")
		}
	default:
		t.Fatalf("while the log is going down: %d %s", status, body)
	}
	// Reading the log ingests what waits: the database refuses it, and the
	// log says so rather than read as whole.
	if _, err := st.TreeState(ctx); err == nil {
		t.Fatal("the log reads as whole while the database refuses it")
	}
	before = p.up.Calls.Load()
	status, body := p.send(t, "GET", "/v1/items/2", "", nil, "")
	if status != http.StatusServiceUnavailable || strings.Contains(body, "audit log down") || strings.Contains(body, "SQL") {
		t.Fatalf("without an audit log: %d %s", status, body)
	}
	if p.up.Calls.Load() != before {
		t.Fatal("a call whose record failed reached the upstream")
	}
	if _, err := db.Exec(`DROP TRIGGER audit_down`); err != nil {
		t.Fatal(err)
	}
	// Once the log is back, the budget holds exactly what was forwarded.
	for ; forwarded < budget; forwarded++ {
		if status, body := p.send(t, "GET", "/v1/items/3", "", nil, ""); status != 200 {
			t.Fatalf("call %d of the budget, once the log is back: %d %s", forwarded+1, status, body)
		}
	}
	if status, _ := p.send(t, "GET", "/v1/items/4", "", nil, ""); status != http.StatusTooManyRequests {
		t.Fatalf("a call over a budget of %d: %d", budget, status)
	}
	if got := p.up.Calls.Load(); got != int64(budget) {
		t.Fatalf("the upstream saw %d calls, want %d", got, budget)
	}
}
