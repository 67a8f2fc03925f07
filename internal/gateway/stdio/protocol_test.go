package stdio

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
)

// openGET opens a session's event stream and returns its events.
func (h *harness) openGET(t testing.TB, sid string) (<-chan sse.Event, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set(sessionHeader, sid)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	events := make(chan sse.Event, 100)
	go func() {
		defer close(events)
		r := sse.NewReader(resp.Body, 0)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return events, resp
}

func next(t testing.TB, events <-chan sse.Event) sse.Event {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("event stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return sse.Event{}
}

func TestRawProtocol(t *testing.T) {
	h := newHarness(t, "echo", nil)
	sid := h.initRaw(t)

	steps := []struct {
		name       string
		session    string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   int64
		wantBody   string
	}{
		{name: "call", session: sid, body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
			wantStatus: 200, wantBody: `{"jsonrpc":"2.0","id":1,"result":{"method":"tools/list"}}`},
		{name: "string id", session: sid, body: `{"jsonrpc":"2.0","id":"a-1","method":"ping"}`,
			wantStatus: 200, wantBody: `{"jsonrpc":"2.0","id":"a-1","result":{"method":"ping"}}`},
		{name: "notification", session: sid, body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, wantStatus: 202},
		{name: "negotiated protocol version", session: sid, body: `{"jsonrpc":"2.0","id":2,"method":"ping"}`,
			header: map[string]string{versionHeader: "2025-06-18"}, wantStatus: 200},
		{name: "other protocol version", session: sid, body: `{"jsonrpc":"2.0","id":3,"method":"ping"}`,
			header: map[string]string{versionHeader: "2024-11-05"}, wantStatus: 400, wantCode: jsonrpc.CodeInvalidRequest},
		{name: "no session", body: `{"jsonrpc":"2.0","id":4,"method":"ping"}`, wantStatus: 400, wantCode: jsonrpc.CodeInvalidRequest},
		{name: "server/discover without a session", body: `{"jsonrpc":"2.0","id":4,"method":"server/discover"}`,
			wantStatus: 400, wantCode: jsonrpc.CodeInvalidRequest},
		{name: "unknown session", session: "NOPE", body: `{"jsonrpc":"2.0","id":5,"method":"ping"}`, wantStatus: 404, wantCode: CodeSessionNotFound},
		{name: "initialize on a session", session: sid, body: initBody, wantStatus: 400, wantCode: jsonrpc.CodeInvalidRequest},
		{name: "initialize as notification", body: `{"jsonrpc":"2.0","method":"initialize","params":{}}`,
			wantStatus: 400, wantCode: jsonrpc.CodeInvalidRequest},
		{name: "response nobody asked for", session: sid, body: `{"jsonrpc":"2.0","id":"srv-9","result":{}}`,
			wantStatus: 400, wantCode: jsonrpc.CodeInvalidRequest},
		{name: "wrong content type", session: sid, body: `{"jsonrpc":"2.0","id":6,"method":"ping"}`,
			header: map[string]string{"Content-Type": "text/plain"}, wantStatus: 415},
		{name: "json with charset", session: sid, body: `{"jsonrpc":"2.0","id":7,"method":"ping"}`,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}, wantStatus: 200},
		{name: "accept excludes json", session: sid, body: `{"jsonrpc":"2.0","id":8,"method":"ping"}`,
			header: map[string]string{"Accept": "text/event-stream"}, wantStatus: 406},
		{name: "no accept header", session: sid, body: `{"jsonrpc":"2.0","id":9,"method":"ping"}`,
			header: map[string]string{"Accept": ""}, wantStatus: 200},
		{name: "upstream writes junk to stdout", session: sid, body: `{"jsonrpc":"2.0","id":10,"method":"noise"}`,
			wantStatus: 200, wantBody: `{"jsonrpc":"2.0","id":10,"result":{}}`},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp, body := h.post(t, st.session, st.body, st.header)
			if resp.StatusCode != st.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, st.wantStatus, body)
			}
			if st.wantCode != 0 && rpcErrorCode(body) != st.wantCode {
				t.Errorf("JSON-RPC code of %s, want %d", body, st.wantCode)
			}
			if st.wantBody != "" && string(body) != st.wantBody {
				t.Errorf("body %s, want %s", body, st.wantBody)
			}
			if st.wantStatus == 202 && len(body) != 0 {
				t.Errorf("202 with a body: %s", body)
			}
		})
	}

	t.Run("server request via GET, answered by POST", func(t *testing.T) {
		events, resp := h.openGET(t, sid)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("GET: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if r, _ := h.post(t, sid, `{"jsonrpc":"2.0","id":11,"method":"ask"}`, nil); r.StatusCode != 200 {
			t.Fatalf("ask: %d", r.StatusCode)
		}
		ev := next(t, events)
		if ev.Data != `{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{}}` {
			t.Fatalf("event %q", ev.Data)
		}
		answer := `{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant","content":{"type":"text","text":"x"},"model":"m"}}`
		if r, body := h.post(t, sid, answer, nil); r.StatusCode != 202 {
			t.Fatalf("answer: %d %s", r.StatusCode, body)
		}
		if r, _ := h.post(t, sid, answer, nil); r.StatusCode != 400 {
			t.Errorf("second answer: %d, want 400", r.StatusCode)
		}
		waitUntil(t, "the answer at the process", func() bool {
			return strings.Contains(h.logs.String(), `got {\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"result\"`)
		})

		// One GET stream per session.
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL, nil)
		req.Header.Set(sessionHeader, sid)
		second, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		second.Body.Close()
		if second.StatusCode != http.StatusConflict {
			t.Errorf("second GET: %d, want 409", second.StatusCode)
		}
	})

	t.Run("GET and DELETE errors", func(t *testing.T) {
		for _, tc := range []struct {
			method, session, accept string
			want                    int
		}{
			{"GET", "", "text/event-stream", 400},
			{"GET", "NOPE", "text/event-stream", 404},
			{"GET", sid, "application/json", 406},
			{"DELETE", "", "", 400},
			{"DELETE", "NOPE", "", 404},
			{"PUT", sid, "", 405},
		} {
			req, _ := http.NewRequest(tc.method, h.srv.URL, nil)
			if tc.session != "" {
				req.Header.Set(sessionHeader, tc.session)
			}
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := h.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s session=%q accept=%q: %d, want %d", tc.method, tc.session, tc.accept, resp.StatusCode, tc.want)
			}
		}
	})

	t.Run("DELETE ends the session", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodDelete, h.srv.URL, nil)
		req.Header.Set(sessionHeader, sid)
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %d", resp.StatusCode)
		}
		if r, body := h.post(t, sid, `{"jsonrpc":"2.0","id":12,"method":"ping"}`, nil); r.StatusCode != 404 {
			t.Errorf("after DELETE: %d %s", r.StatusCode, body)
		}
	})
}

func TestUpstreamFailures(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"exits without answering", `{"jsonrpc":"2.0","id":1,"method":"exit"}`},
		{"answers over MaxMessageSize", `{"jsonrpc":"2.0","id":1,"method":"big","params":{"n":70000}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "echo", func(c *Config) { c.MaxMessageSize = 64 << 10 })
			sid := h.initRaw(t)
			resp, body := h.post(t, sid, tt.body, nil)
			if resp.StatusCode != http.StatusBadGateway || rpcErrorCode(body) != CodeUpstreamFailed || !strings.Contains(string(body), `"id":1`) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if r, _ := h.post(t, sid, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, nil); r.StatusCode != 404 {
				t.Errorf("after failure: %d, want 404", r.StatusCode)
			}
			waitUntil(t, "no sessions", func() bool { return h.b.Sessions() == 0 })
		})
	}
}

// TestStuckUpstream: a program that stops reading stdin is ended once a
// write has waited WriteTimeout, and one that ignores SIGTERM is killed.
func TestStuckUpstream(t *testing.T) {
	h := newHarness(t, "echo", func(c *Config) {
		c.MaxMessageSize = 1 << 20
		c.WriteTimeout = 200 * time.Millisecond
		c.ShutdownGrace = 100 * time.Millisecond
	})
	sid := h.initRaw(t)
	pid := h.sessionList()[0].pid
	stalled := make(chan int, 1)
	go func() {
		resp, _ := h.post(t, sid, `{"jsonrpc":"2.0","id":1,"method":"stall"}`, nil)
		stalled <- resp.StatusCode
	}()
	waitUntil(t, "the process to stall", func() bool { return strings.Contains(h.logs.String(), `\"method\":\"stall\"`) })
	// More than a pipe holds (64 KiB on Linux), so the write blocks.
	big := `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + strings.Repeat("x", 300<<10) + `"}}`
	start := time.Now()
	resp, body := h.post(t, sid, big, nil)
	if resp.StatusCode != http.StatusBadGateway || rpcErrorCode(body) != CodeUpstreamFailed {
		t.Fatalf("blocked write: %d %s", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("write gave up after %v", d)
	}
	if code := <-stalled; code != http.StatusBadGateway {
		t.Errorf("pending call: %d, want 502", code)
	}
	waitGone(t, pid)
	waitUntil(t, "SIGKILL after SIGTERM was ignored", func() bool {
		return strings.Contains(h.logs.String(), `exit="signal: killed"`)
	})
}

func TestBoundedBuffers(t *testing.T) {
	h := newHarness(t, "echo", func(c *Config) { c.MaxBufferedMessages = 5 })
	sid := h.initRaw(t)
	// No GET stream is open: 5 notifications are kept, the rest dropped.
	if r, _ := h.post(t, sid, `{"jsonrpc":"2.0","id":1,"method":"notify","params":{"n":20}}`, nil); r.StatusCode != 200 {
		t.Fatalf("notify: %d", r.StatusCode)
	}
	// The server request cannot be queued either: the bridge refuses it to
	// the process on the client's behalf.
	if r, _ := h.post(t, sid, `{"jsonrpc":"2.0","id":2,"method":"ask"}`, nil); r.StatusCode != 200 {
		t.Fatalf("ask: %d", r.StatusCode)
	}
	waitUntil(t, "the refusal at the process", func() bool {
		return strings.Contains(h.logs.String(), `got {\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"error\":{\"code\":-32012`)
	})
	events, _ := h.openGET(t, sid)
	for i := range 5 {
		var m struct {
			Params struct{ Data int } `json:"params"`
		}
		if err := json.Unmarshal([]byte(next(t, events).Data), &m); err != nil || m.Params.Data != i {
			t.Fatalf("buffered event %d: %+v %v", i, m, err)
		}
	}
	if !strings.Contains(h.logs.String(), "dropped upstream message for the client") {
		t.Error("drops not logged")
	}
}

func TestMaxPendingRequests(t *testing.T) {
	h := newHarness(t, "sdk", func(c *Config) { c.MaxPendingRequests = 2 })
	cs := h.connect(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		go cs.CallTool(ctx, slowCall())
	}
	waitUntil(t, "two pending calls", func() bool { return h.pending() == 2 })
	resp, body := h.post(t, cs.ID(), `{"jsonrpc":"2.0","id":99,"method":"ping"}`, nil)
	if resp.StatusCode != http.StatusTooManyRequests || rpcErrorCode(body) != CodeBusy {
		t.Fatalf("third call: %d %s", resp.StatusCode, body)
	}
}

// pending counts calls awaiting a response, over all sessions.
func (h *harness) pending() int {
	n := 0
	for _, s := range h.sessionList() {
		s.mu.Lock()
		n += len(s.pending)
		s.mu.Unlock()
	}
	return n
}

func (h *harness) sessionList() []*session {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	var out []*session
	for _, s := range h.b.sessions {
		out = append(out, s)
	}
	return out
}

// TestHostileInputNeverReachesProcess sends malformed and hostile messages
// on a live session, then proves by the process's own record that none of
// them reached it.
func TestHostileInputNeverReachesProcess(t *testing.T) {
	h := newHarness(t, "echo", func(c *Config) { c.MaxMessageSize = 1 << 20 })
	sid := h.initRaw(t)
	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	tests := []struct {
		name   string
		body   string
		status int
		code   int64
	}{
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"HOSTILE"}]`, 400, jsonrpc.CodeInvalidRequest},
		{"empty batch", `[]`, 400, jsonrpc.CodeInvalidRequest},
		{"not JSON", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE"`, 400, jsonrpc.CodeParseError},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE"} {}`, 400, jsonrpc.CodeParseError},
		{"two lines", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"HOSTILE\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"HOSTILE\"}", 400, jsonrpc.CodeParseError},
		{"empty", ``, 400, jsonrpc.CodeParseError},
		{"not UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"HOSTILE\",\"params\":{\"a\":\"\xff\"}}", 400, jsonrpc.CodeInvalidRequest},
		{"scalar", `"HOSTILE"`, 400, jsonrpc.CodeInvalidRequest},
		{"deep nesting", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":` + deep + `}`, 400, jsonrpc.CodeInvalidRequest},
		{"huge id", `{"jsonrpc":"2.0","id":1e300,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"fractional id", `{"jsonrpc":"2.0","id":1.5,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"id over 2^53", `{"jsonrpc":"2.0","id":9007199254740993,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"long string id", `{"jsonrpc":"2.0","id":"` + strings.Repeat("x", 300) + `","method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"bool id", `{"jsonrpc":"2.0","id":true,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"numeric method", `{"jsonrpc":"2.0","id":1,"method":7,"params":{"x":"HOSTILE"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"empty method", `{"jsonrpc":"2.0","id":1,"method":"","params":{"x":"HOSTILE"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"method with newline", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE\n"}`, 400, jsonrpc.CodeInvalidRequest},
		{"array params", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":[1]}`, 400, jsonrpc.CodeInvalidRequest},
		{"string params", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":"x"}`, 400, jsonrpc.CodeInvalidRequest},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"numeric version", `{"jsonrpc":2.0,"id":1,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"no version", `{"id":1,"method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"duplicate method", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"case-folded member", `{"jsonrpc":"2.0","id":1,"Method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"unknown member", `{"jsonrpc":"2.0","id":1,"method":"ping","HOSTILE":1}`, 400, jsonrpc.CodeInvalidRequest},
		{"case variant beside member", `{"jsonrpc":"2.0","id":1,"method":"ping","Method":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"duplicate argument deep", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":{"arguments":{"p":{"q":1,"q":2}}}}`, 400, jsonrpc.CodeInvalidRequest},
		{"case variant argument", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":{"arguments":{"path":"/a","PATH":"/b"}}}`, 400, jsonrpc.CodeInvalidRequest},
		{"lone surrogate", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":{"a":"\ud800"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"overlong UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"HOSTILE\",\"params\":{\"a\":\"\xc0\xae\"}}", 400, jsonrpc.CodeInvalidRequest},
		{"request with result", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","result":{}}`, 400, jsonrpc.CodeInvalidRequest},
		{"response with both", `{"jsonrpc":"2.0","id":"srv-1","result":{"x":"HOSTILE"},"error":{"code":1,"message":"m"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"response with neither", `{"jsonrpc":"2.0","id":"HOSTILE"}`, 400, jsonrpc.CodeInvalidRequest},
		{"error without code", `{"jsonrpc":"2.0","id":"srv-1","error":{"message":"HOSTILE"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"error with float code", `{"jsonrpc":"2.0","id":"srv-1","error":{"code":1.5,"message":"HOSTILE"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"no method or id", `{"jsonrpc":"2.0","params":{"x":"HOSTILE"}}`, 400, jsonrpc.CodeInvalidRequest},
		{"too large", `{"jsonrpc":"2.0","id":1,"method":"HOSTILE","params":{"x":"` + strings.Repeat("x", 1<<20) + `"}}`, 413, jsonrpc.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.post(t, sid, tt.body, nil)
			if resp.StatusCode != tt.status || rpcErrorCode(body) != tt.code {
				t.Fatalf("%d %s, want %d with code %d", resp.StatusCode, body, tt.status, tt.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	// Lines reach the process in order: once it has logged the ping, it
	// would have logged anything sent before.
	if r, _ := h.post(t, sid, `{"jsonrpc":"2.0","id":"sync","method":"ping"}`, nil); r.StatusCode != 200 {
		t.Fatalf("ping: %d", r.StatusCode)
	}
	waitUntil(t, "the ping at the process", func() bool { return strings.Contains(h.logs.String(), `\"id\":\"sync\"`) })
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "upstream stderr") && (strings.Contains(line, "HOSTILE") || strings.Contains(line, "PROTOCOL VIOLATION")) {
			t.Errorf("reached the process: %s", line)
		}
	}
	if h.b.Sessions() != 1 {
		t.Error("session did not survive hostile input")
	}
}

// duplicate in-flight ids are refused while the first is pending.
func TestDuplicatePendingID(t *testing.T) {
	h := newHarness(t, "sdk", nil)
	cs := h.connect(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cs.CallTool(ctx, slowCall())
	var id jsonrpc.ID
	waitUntil(t, "a pending call", func() bool {
		for _, s := range h.sessionList() {
			s.mu.Lock()
			for k := range s.pending {
				id = k
			}
			s.mu.Unlock()
		}
		return id.IsValid()
	})
	raw, _ := json.Marshal(id.Raw())
	resp, body := h.post(t, cs.ID(), `{"jsonrpc":"2.0","id":`+string(raw)+`,"method":"ping"}`, nil)
	if resp.StatusCode != 400 || rpcErrorCode(body) != jsonrpc.CodeInvalidRequest {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}
