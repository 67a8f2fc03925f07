package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

func TestGatewayHTTPRoutes(t *testing.T) {
	billing := gatewaytest.StartHTTP(t)
	e := startGateway(t, `  - name: billing
    http:
      url: `+billing.URL+`
      routes:
        - { name: invoices, method: GET, path: /v1/invoices }
        - { name: refunds, method: POST, path: /v1/refunds }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: X-Api-Key, secret: files-token }
`)
	ctx := context.Background()
	if _, err := e.Operator.SetSecret(ctx, "files-token", []byte(filesSecret)); err != nil {
		t.Fatal(err)
	}
	hc, _ := e.agentHTTP(t, "ops1", "ops")
	do := func(method, path, body string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(method, e.GatewayURL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	// ops may read (GET) anywhere: the route passes, with the credential
	// injected and the agent's own headers stripped.
	status, body := do("GET", "/http/billing/v1/invoices?month=2026-11", "", map[string]string{"Cookie": "x", "X-Forwarded-For": "1.2.3.4"})
	if status != 200 || !strings.Contains(body, `"path":"/v1/invoices"`) {
		t.Fatalf("GET invoices: %d %s", status, body)
	}
	seen := billing.Last.Load().(gatewaytest.Seen)
	if seen.Header.Get("X-Api-Key") != filesSecret || seen.Query != "month=2026-11" || seen.Auth != "" ||
		seen.Header.Get("Cookie") != "" || seen.Header.Get("X-Forwarded-For") != "" {
		t.Fatalf("upstream saw %+v", seen)
	}
	if strings.Contains(body, filesSecret) {
		t.Fatal("the secret reached the agent")
	}
	// refunds is high sensitivity in the catalog: forbidden for everyone.
	before := billing.Calls.Load()
	status, body = do("POST", "/http/billing/v1/refunds", `{"amount":5}`, nil)
	if status != http.StatusForbidden || !strings.Contains(body, "denied by policy") {
		t.Fatalf("POST refunds: %d %s", status, body)
	}
	// Unmapped paths and methods are refused (deny by default).
	for _, c := range []struct{ method, path string }{{"DELETE", "/http/billing/v1/invoices"}, {"GET", "/http/billing/admin"},
		{"GET", "/http/billing/v1/invoices/../refunds"}} {
		if status, _ := do(c.method, c.path, "", nil); status < 400 {
			t.Errorf("%s %s: %d", c.method, c.path, status)
		}
	}
	if billing.Calls.Load() != before {
		t.Fatal("a refused call reached the upstream")
	}
	// MCP paths are not HTTP routes and vice versa.
	if status, _ := do("GET", "/http/files/x", "", nil); status != http.StatusNotFound {
		t.Fatalf("/http on an MCP server: %d", status)
	}
}

func TestGatewayBudgetsDoNotRefill(t *testing.T) {
	billing := gatewaytest.StartHTTP(t)
	e := startGateway(t, `  - name: billing
    http:
      url: `+billing.URL+`
      routes:
        - { name: invoices, method: GET, path: /v1/invoices }
    callers: ["spiffe://bulkhead.local/agent/*"]
    budget: { calls: 3 }
  - name: billing2
    http:
      url: `+billing.URL+`
      routes:
        - { name: invoices, method: GET, path: /v1/invoices }
    callers: ["spiffe://bulkhead.local/agent/*"]
    budget: { response_bytes: 100 }
`)
	// Servers missing from the catalog have no attributes, so the
	// guardrails cannot evaluate and deny: describe billing2.
	ctx := context.Background()
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range cat.Servers {
		if srv.Name == "billing" {
			srv.Name = "billing2"
			cat.Servers = append(cat.Servers, srv)
			break
		}
	}
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
	hc, _ := e.agentHTTP(t, "ops1", "ops")
	getFrom := func(server string) int {
		resp, err := hc.Get(e.GatewayURL + "/http/" + server + "/v1/invoices")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	get := func() int { return getFrom("billing") }
	for i := 0; i < 3; i++ {
		if s := get(); s != 200 {
			t.Fatalf("call %d: %d", i, s)
		}
	}
	if s := get(); s != http.StatusTooManyRequests {
		t.Fatalf("call over budget: %d", s)
	}
	// The response-bytes budget: the first answer (over 100 bytes) spends
	// it; the next call is refused, and waiting does not help.
	if s := getFrom("billing2"); s != 200 {
		t.Fatalf("first billing2 call: %d", s)
	}
	if s := getFrom("billing2"); s != http.StatusTooManyRequests {
		t.Fatalf("billing2 over its byte budget: %d", s)
	}
	if n := len(events(t, e.Env.Env, "gateway.budget")); n != 2 {
		t.Fatalf("%d budget refusals recorded, want 2", n)
	}
}
