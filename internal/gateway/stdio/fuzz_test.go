package stdio

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newRequest(accept []string) (*http.Request, error) {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	for _, a := range accept {
		r.Header.Add("Accept", a)
	}
	return r, nil
}

// FuzzBridgePOST posts arbitrary bodies, with and without a live session,
// to a bridge over the checking echo server. A body never panics the
// bridge, never gets a 5xx (the echo server does not fail, so no upstream
// failure is expected), and never makes the process read a line that is
// not one JSON-RPC object: the session, checked with a ping after every
// input, would have ended.
func FuzzBridgePOST(f *testing.F) {
	for _, seed := range []string{
		initBody,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"srv-1","result":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":"\n\u2028\r"}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\n\"a\":\n1}}",
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1e400,"method":"m"}`,
		`{"jsonrpc":"2.0","id":1,"method":"m","params":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`,
		"\xff\xfe",
		``,
	} {
		f.Add(seed)
	}
	h := newHarness(f, "strict", func(c *Config) {
		c.MaxMessageSize = 64 << 10
		c.MaxSessions = 4
		c.Logger = slog.New(slog.NewTextHandler(&syncBuffer{max: 64 << 10}, nil))
	})
	sid := h.initRaw(f)
	f.Fuzz(func(t *testing.T, body string) {
		for _, session := range []string{sid, ""} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if session != "" {
				req.Header.Set(sessionHeader, session)
			}
			h.b.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
			}
			if rec.Code >= 400 && rpcErrorCode(rec.Body.Bytes()) == 0 {
				t.Fatalf("status %d without a JSON-RPC error: %s", rec.Code, rec.Body.String())
			}
			if id := rec.Header().Get(sessionHeader); id != "" {
				// A fuzzed initialize made a session: end it again.
				del := httptest.NewRequest(http.MethodDelete, "/", nil)
				del.Header.Set(sessionHeader, id)
				h.b.ServeHTTP(httptest.NewRecorder(), del)
			}
		}
		ping := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"jsonrpc":"2.0","id":"fuzz-sync","method":"ping"}`))
		ping.Header.Set("Content-Type", "application/json")
		ping.Header.Set(sessionHeader, sid)
		rec := httptest.NewRecorder()
		h.b.ServeHTTP(rec, ping)
		if rec.Code != http.StatusOK {
			t.Fatalf("session broken after %q: %d %s", body, rec.Code, rec.Body.String())
		}
	})
}
