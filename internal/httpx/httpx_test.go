package httpx_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// sqlCause is what a PostgreSQL driver says when the schema is not what the
// code expects: it must reach the log and never the caller.
const sqlCause = "pq: relation audit_events does not exist"

// Every kind maps to one status, code and client text; the server's own
// failures answer a fixed text and log the cause, the caller's mistakes
// answer their own message and log nothing.
func TestWriteErrorMapsEveryKind(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
		code   string
		text   string
		logged bool
	}{
		{"invalid", fmt.Errorf("%w: ttl must be positive", fault.Invalid), 400, "invalid_request", "invalid request: ttl must be positive", false},
		{"unauthenticated", fmt.Errorf("%w: join token expired", fault.Unauthenticated), 401, "unauthenticated", "unauthenticated: join token expired", false},
		{"forbidden", fmt.Errorf("%w: agent alpha is disabled", fault.Forbidden), 403, "forbidden", "forbidden: agent alpha is disabled", false},
		{"not found", fmt.Errorf("%w: no agent beta", fault.NotFound), 404, "not_found", "not found: no agent beta", false},
		{"method not allowed", fmt.Errorf("%w: use GET or POST", fault.MethodNotAllowed), 405, "method_not_allowed", "method not allowed: use GET or POST", false},
		{"conflict", fmt.Errorf("%w: agent alpha exists", fault.Conflict), 409, "conflict", "conflict: agent alpha exists", false},
		{"too large", fmt.Errorf("%w: body is over 64 bytes", fault.TooLarge), 413, "too_large", "request too large: body is over 64 bytes", false},
		{"unsupported media type", fmt.Errorf("%w: send application/json", fault.Unsupported), 415, "unsupported_media_type", "unsupported media type: send application/json", false},
		{"exhausted", fmt.Errorf("%w: 10 calls per minute", fault.Exhausted), 429, "budget", "budget exhausted: 10 calls per minute", false},
		{"upstream", fmt.Errorf("%w: dial tcp 10.0.0.7:8080: connection refused", fault.Upstream), 502, "upstream", "upstream server unavailable", true},
		{"unavailable store", fmt.Errorf("%w: %w", fault.Unavailable, errors.New(sqlCause)), 503, "unavailable", "the service is temporarily unavailable; retry shortly", true},
		{"unavailable under a client kind", fmt.Errorf("%w: agent alpha: %w", fault.Forbidden, fmt.Errorf("%w: %s", fault.Unavailable, sqlCause)), 503, "unavailable", "the service is temporarily unavailable; retry shortly", true},
		{"unclassified", fmt.Errorf("store: list agents: %s", sqlCause), 500, "internal", "internal error", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/v1/crl", nil)
			httpx.WriteError(w, r, logger, c.err)

			var body api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if w.Code != c.status || body.Code != c.code || body.Message != c.text {
				t.Fatalf("got %d %q %q, want %d %q %q", w.Code, body.Code, body.Message, c.status, c.code, c.text)
			}
			if status, code, text := httpx.Problem(c.err); status != c.status || code != c.code || text != c.text {
				t.Fatalf("Problem = %d %q %q, not what WriteError wrote", status, code, text)
			}
			if status, code := httpx.Status(c.err); status != c.status || code != c.code {
				t.Fatalf("Status = %d %q", status, code)
			}
			if c.logged {
				if strings.Contains(w.Body.String(), "pq:") || strings.Contains(w.Body.String(), "10.0.0.7") {
					t.Fatalf("the cause reached the caller: %s", w.Body)
				}
				for _, want := range []string{"level=ERROR", "method=GET", "path=/v1/crl", c.err.Error()} {
					if !strings.Contains(logs.String(), want) {
						t.Fatalf("log %q lacks %q", logs.String(), want)
					}
				}
			} else if logs.Len() != 0 {
				t.Fatalf("a caller's mistake was logged as a failure: %s", logs.String())
			}
			if got := w.Header().Get("WWW-Authenticate"); (c.status == 401) != (got != "") {
				t.Fatalf("WWW-Authenticate = %q on a %d", got, c.status)
			}
		})
	}
}

// Headers a caller sets before WriteError (Allow on a 405, Retry-After on
// a 429) survive it.
func TestWriteErrorKeepsHeaders(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set("Allow", "GET, POST")
	httpx.WriteError(w, httptest.NewRequest(http.MethodPut, "/mcp/x", nil), slog.New(slog.DiscardHandler), fault.MethodNotAllowed)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, POST" {
		t.Fatalf("got %d, Allow %q", w.Code, w.Header().Get("Allow"))
	}
}

// Control-plane bodies are read by the same strict parser as the
// gateway's: a request that two JSON parsers would read differently is
// refused, not resolved.
func TestUnmarshalJSONRefusesAmbiguity(t *testing.T) {
	type req struct {
		Name  string `json:"name"`
		Scope string `json:"scope"`
	}
	for _, tt := range []struct{ name, body string }{
		{"duplicate", `{"name":"a","name":"b"}`},
		{"case variant", `{"name":"a","Name":"b"}`},
		{"lone surrogate", `{"name":"\ud800"}`},
		{"invalid UTF-8", "{\"name\":\"\xff\"}"},
		{"unknown field", `{"name":"a","extra":1}`},
		{"two values", `{"name":"a"}{"name":"b"}`},
		{"too deep", `{"name":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`},
	} {
		var v req
		if err := httpx.UnmarshalJSON([]byte(tt.body), 0, &v); !errors.Is(err, fault.Invalid) {
			t.Errorf("%s: %v, want an invalid request", tt.name, err)
		}
	}
	var v req
	if err := httpx.UnmarshalJSON([]byte(`{"name":"a","scope":"mcp"}`), 0, &v); err != nil || v.Name != "a" || v.Scope != "mcp" {
		t.Fatalf("a plain body: %+v %v", v, err)
	}
}
