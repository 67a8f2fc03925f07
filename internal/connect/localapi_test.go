package connect_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/connect"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// withManifest is the standard environment with the example manifest
// (report-writer) applied.
func withManifest(t *testing.T) *gatewaytest.Env {
	t.Helper()
	e := gatewaytest.Start(t, "")
	src, err := os.ReadFile("../../examples/manifests/report-writer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Operator.ApplyManifest(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	return e
}

// localReply is a local API answer.
type localReply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// str reads a string field of the body, or of an object in it
// ("task.id").
func (r localReply) str(path string) string {
	var v any = r.body
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// local calls the local API the way an agent does: plain HTTP with the
// sidecar header and, for a body, application/json.
func local(t *testing.T, sc *sidecar, method, path, body string) localReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, sc.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(connect.LocalHeader, "1")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) localReply {
	t.Helper()
	resp, err := plain().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := localReply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

// raw sends bytes on a new connection to the sidecar and reads the answer.
func raw(t *testing.T, addr, request string) localReply {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := localReply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

// Requests to the local API that are not the agent's own process's are
// refused before the control plane hears of them: from off loopback, from
// a web page (any Origin, even a loopback one), from a browser at all,
// for another Host (DNS rebinding) or without the sidecar header (CSRF).
func TestLocalAPIRefusesWhatIsNotTheAgent(t *testing.T) {
	e := withManifest(t)
	dir, _ := e.Agent(t, "alpha", "reader")
	sc := start(t, e, dir, nil)
	_, port, _ := net.SplitHostPort(sc.Addr())
	open := `{"manifest":"report-writer"}`
	post := func(host string, headers ...string) string {
		return "POST /.bulkhead/v1/task HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\n" +
			strings.Join(headers, "") + "Content-Length: " + strconv.Itoa(len(open)) + "\r\n\r\n" + open
	}
	me := "127.0.0.1:" + port
	hdr := connect.LocalHeader + ": 1\r\n"
	cases := []struct {
		name, request string
		status        int
		want          string
	}{
		{"web page of another site", post(me, hdr, "Origin: https://evil.example\r\n"), 403, "not a loopback origin"},
		{"web page on a local dev server", post(me, hdr, "Origin: http://localhost:3000\r\n"), 403, "refuses requests from web pages"},
		{"web page served from the sidecar's own origin", post(me, hdr, "Origin: http://"+me+"\r\n"), 403, "refuses requests from web pages"},
		{"sandboxed page (null origin)", post(me, hdr, "Origin: null\r\n"), 403, "not a loopback origin"},
		{"browser without Origin", "GET /.bulkhead/v1/task HTTP/1.1\r\nHost: " + me + "\r\n" + hdr + "Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n\r\n", 403, "refuses requests from browsers"},
		{"DNS rebinding", post("rebind.evil.example:"+port, hdr), 403, "not a loopback name"},
		{"another loopback port", post("127.0.0.1:1", hdr), 403, "is not the sidecar's address"},
		{"no port (port 80)", post("localhost", hdr), 403, "is not the sidecar's address"},
		{"no sidecar header (CSRF)", post(me), 403, `needs the header "Bulkhead-Sidecar: 1"`},
		{"empty sidecar header", post(me, connect.LocalHeader+":\r\n"), 403, "needs the header"},
		{"absolute-form target", "GET http://" + me + "/.bulkhead/v1/task HTTP/1.1\r\nHost: " + me + "\r\n" + hdr + "\r\n", 400, "not a forward proxy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := raw(t, sc.Addr(), c.request)
			if r.status != c.status || !strings.Contains(r.str("error"), c.want) {
				t.Fatalf("got %d %s, want %d saying %q", r.status, r.raw, c.status, c.want)
			}
		})
	}
	// From off loopback (the listener is loopback, so only the handler
	// can be shown such a request).
	req := httptest.NewRequest(http.MethodGet, "/.bulkhead/v1/task", nil)
	req.Host, req.RemoteAddr = me, "192.0.2.10:40000"
	req.Header.Set(connect.LocalHeader, "1")
	rec := httptest.NewRecorder()
	sc.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "only the agent's own process, over loopback") {
		t.Fatalf("from 192.0.2.10: %d %s", rec.Code, rec.Body.String())
	}

	if n := len(events(t, e, "task.start")); n != 0 || sc.Task() != "" {
		t.Fatalf("a refused request opened a task (%d task.start records, sidecar task %q)", n, sc.Task())
	}
	if !strings.Contains(sc.log.String(), "local API request refused") {
		t.Fatal("the refusals were not logged")
	}
	// The agent's own request, for contrast, and in every loopback
	// spelling of the address.
	for _, host := range []string{me, "localhost:" + port} {
		r := raw(t, sc.Addr(), "GET /.bulkhead/v1/task HTTP/1.1\r\nHost: "+host+"\r\n"+hdr+"\r\n")
		if r.status != http.StatusOK || r.raw != "{\"task\":null}\n" {
			t.Fatalf("GET task with Host %s: %d %s", host, r.status, r.raw)
		}
		if r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("headers %v", r.header)
		}
	}
}

// Bodies are bounded and strict: one JSON object of known fields, once
// each, as application/json. Nothing malformed opens a task.
func TestLocalAPIBodies(t *testing.T) {
	e := withManifest(t)
	dir, _ := e.Agent(t, "alpha", "reader")
	sc := start(t, e, dir, nil)
	cases := []struct {
		name, ctype, body string
		status            int
		want              string
	}{
		{"over 16 KiB", "application/json", `{"manifest":"report-writer","description":"` + strings.Repeat("x", 16<<10) + `"}`, 413, "over 16384 bytes"},
		{"unknown field", "application/json", `{"manifest":"report-writer","task":"tk_000000000000000000000000"}`, 400, "unknown field"},
		{"duplicate key", "application/json", `{"manifest":"nope","manifest":"report-writer"}`, 400, "not valid JSON"},
		{"key differing in case", "application/json", `{"manifest":"report-writer","Manifest":"other"}`, 400, "not valid JSON"},
		{"two values", "application/json", `{"manifest":"report-writer"}{"manifest":"report-writer"}`, 400, "more than one JSON value"},
		{"not JSON", "application/json", `manifest=report-writer`, 400, "not valid JSON"},
		{"too deep", "application/json", `{"manifest":[[[[["report-writer"]]]]]}`, 400, "not valid JSON"},
		{"wrong type", "application/json", `{"manifest":42}`, 400, "not valid JSON"},
		{"form body", "application/x-www-form-urlencoded", `manifest=report-writer`, 415, "must be application/json"},
		{"text/plain (a page's simple request)", "text/plain", `{"manifest":"report-writer"}`, 415, "must be application/json"},
		{"empty", "application/json", ``, 400, "not valid JSON"},
		{"no manifest", "application/json", `{"description":"x"}`, 400, "manifest is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, sc.URL()+"/.bulkhead/v1/task", strings.NewReader(c.body))
			req.Header.Set(connect.LocalHeader, "1")
			req.Header.Set("Content-Type", c.ctype)
			r := do(t, req)
			if r.status != c.status || !strings.Contains(r.str("error"), c.want) {
				t.Fatalf("got %d %s, want %d saying %q", r.status, r.raw, c.status, c.want)
			}
		})
	}
	if n := len(events(t, e, "task.start")); n != 0 || sc.Task() != "" {
		t.Fatalf("a malformed body opened a task (%d task.start records, sidecar task %q)", n, sc.Task())
	}
	// Paths: canonical only, known ones only, with their methods.
	for _, c := range []struct {
		method, path string
		status       int
		want         string
	}{
		{"GET", "/.bulkhead/v1/task/", 404, "paths are canonical"},
		{"GET", "/.bulkhead/v1//task", 404, "paths are canonical"},
		{"GET", "/.bulkhead/v1/tokens", 404, "no such local API path"},
		{"GET", "/.bulkhead/v1/token", 404, "no such local API path"},
		{"DELETE", "/.bulkhead/v1/task", 405, "does not answer DELETE"},
		{"GET", "/.bulkhead/v1/elevations/el_x%2Fapprove", 400, `"el_x/approve" is not an elevation id`},
		{"GET", "/.bulkhead/v1/elevations/el_x%2F..%2F..%2Ftask", 404, "paths are canonical"},
		{"GET", "/.bulkhead/v1/elevations/../task", 404, "paths are canonical"},
	} {
		r := raw(t, sc.Addr(), c.method+" "+c.path+" HTTP/1.1\r\nHost: "+sc.Addr()+"\r\n"+connect.LocalHeader+": 1\r\n\r\n")
		if r.status != c.status || !strings.Contains(r.str("error"), c.want) {
			t.Fatalf("%s %s: %d %s, want %d saying %q", c.method, c.path, r.status, r.raw, c.status, c.want)
		}
		if c.status == 405 && r.header.Get("Allow") == "" {
			t.Fatalf("%s %s: no Allow header", c.method, c.path)
		}
	}
}

// lastCall is the last decision record of a tool call by alpha.
func lastCall(t *testing.T, e *gatewaytest.Env) audit.Event {
	t.Helper()
	evs := events(t, e, "gateway.call_tool")
	if len(evs) == 0 {
		t.Fatal("no gateway.call_tool record")
	}
	return evs[len(evs)-1]
}

func writeFile(cs *mcp.ClientSession, path string) error {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": path, "content": "report"}})
	if err == nil && res.IsError {
		err = errors.New("tool error: " + gatewaytest.Text(res))
	}
	return err
}

func denied(err error) bool {
	var rpcErr *jsonrpc.Error
	return errors.As(err, &rpcErr) && strings.Contains(rpcErr.Message, "denied")
}

// Opening and completing a task through the local API switches the task
// the tokens carry for the requests sent from then on; an MCP session
// opened before goes on, on its connections, its next calls decided in
// the new task, then at baseline again.
func TestLocalAPITaskSwitching(t *testing.T) {
	e := withManifest(t)
	dir, _ := e.Agent(t, "alpha", "reader")
	sc := start(t, e, dir, nil)
	cs := gatewaytest.Connect(t, sc.URL()+"/mcp/files", plain())

	if _, err := readFile(t, cs, "/srv/a"); err != nil {
		t.Fatal(err)
	}
	if ev := lastCall(t, e); ev.Task != "" || ev.Decision != audit.Allow {
		t.Fatalf("baseline call record = %+v", ev)
	}
	if r := local(t, sc, "POST", "/.bulkhead/v1/elevations", `{"trigger":"write-report","justification":"x"}`); r.status != 409 || r.str("code") != "no_task" {
		t.Fatalf("elevation without a task: %d %s", r.status, r.raw)
	}
	if r := local(t, sc, "POST", "/.bulkhead/v1/task/complete", ""); r.status != 409 || r.str("code") != "no_task" {
		t.Fatalf("complete without a task: %d %s", r.status, r.raw)
	}

	r := local(t, sc, "POST", "/.bulkhead/v1/task", `{"manifest":"report-writer","description":"weekly report"}`)
	task := r.str("task.id")
	if r.status != http.StatusCreated || !strings.HasPrefix(task, "tk_") || r.str("task.status") != "open" || sc.Task() != task {
		t.Fatalf("open task: %d %s (sidecar task %q)", r.status, r.raw, sc.Task())
	}
	if strings.Contains(r.raw, "eyJ") || strings.Contains(r.raw, "PRIVATE KEY") {
		t.Fatalf("the local API answered a token or a key: %s", r.raw)
	}
	// The same session: its next call carries the task.
	if err := writeFile(cs, "/reports/w.md"); !denied(err) {
		t.Fatalf("write in the task before elevation: %v", err)
	}
	if ev := lastCall(t, e); ev.Task != task || ev.Decision != audit.Deny || !slices.Contains(ev.Reasons, "manifest:report-writer:outside") {
		t.Fatalf("call record in the task = %+v", ev)
	}
	issued := events(t, e, "token.issue")
	if last := issued[len(issued)-1]; last.Task != task {
		t.Fatalf("the last token issued is for task %q, want %q", last.Task, task)
	}
	if r := local(t, sc, "GET", "/.bulkhead/v1/task", ""); r.status != 200 || r.str("task.id") != task || !strings.Contains(r.raw, `"open":true`) {
		t.Fatalf("show task: %d %s", r.status, r.raw)
	}
	// An open task is never dropped silently.
	if r := local(t, sc, "POST", "/.bulkhead/v1/task", `{"manifest":"report-writer"}`); r.status != 409 || r.str("code") != "task_open" || !strings.Contains(r.str("error"), task) {
		t.Fatalf("open a second task: %d %s", r.status, r.raw)
	}

	r = local(t, sc, "POST", "/.bulkhead/v1/task/complete", `{"reason":"done"}`)
	if r.status != 200 || r.str("task.status") != "completed" || sc.Task() != "" {
		t.Fatalf("complete: %d %s (sidecar task %q)", r.status, r.raw, sc.Task())
	}
	if r := local(t, sc, "GET", "/.bulkhead/v1/task", ""); r.status != 200 || r.raw != "{\"task\":null}\n" {
		t.Fatalf("show task after completing: %d %s", r.status, r.raw)
	}
	if _, err := readFile(t, cs, "/srv/b"); err != nil {
		t.Fatalf("the session after completing: %v", err)
	}
	if ev := lastCall(t, e); ev.Task != "" || ev.Decision != audit.Allow {
		t.Fatalf("call record back at baseline = %+v", ev)
	}

	// A task cancelled by an operator behind the sidecar's back shows as
	// such, and completing it drops it.
	r = local(t, sc, "POST", "/.bulkhead/v1/task", `{"manifest":"report-writer"}`)
	task2 := r.str("task.id")
	if r.status != http.StatusCreated || task2 == task || sc.Task() != task2 {
		t.Fatalf("open another task: %d %s", r.status, r.raw)
	}
	if _, err := e.Operator.CancelTask(context.Background(), task2, "stop"); err != nil {
		t.Fatal(err)
	}
	if r := local(t, sc, "GET", "/.bulkhead/v1/task", ""); r.status != 200 || r.str("task.status") != "cancelled" {
		t.Fatalf("show cancelled task: %d %s", r.status, r.raw)
	}
	r = local(t, sc, "POST", "/.bulkhead/v1/task/complete", "")
	if r.status != 200 || r.str("task.status") != "cancelled" || sc.Task() != "" {
		t.Fatalf("complete a cancelled task: %d %s (sidecar task %q)", r.status, r.raw, sc.Task())
	}
	if !strings.Contains(sc.log.String(), "the sidecar's task had ended already") {
		t.Fatal("dropping an ended task was not logged")
	}
}

// `bulkhead connect --task`: every token names the task from the start;
// a task that has ended stops the sidecar at start, saying how and when.
func TestSidecarStartsInATask(t *testing.T) {
	e := withManifest(t)
	dir, alpha := e.Agent(t, "alpha", "reader")
	task, err := alpha.StartTask(context.Background(), "report-writer", "weekly report")
	if err != nil {
		t.Fatal(err)
	}
	sc := start(t, e, dir, func(c *connect.Config) { c.Task = task.ID })
	cs := gatewaytest.Connect(t, sc.URL()+"/mcp/files", plain())
	if err := writeFile(cs, "/reports/w.md"); !denied(err) {
		t.Fatalf("write in the task: %v", err)
	}
	if ev := lastCall(t, e); ev.Task != task.ID || !slices.Contains(ev.Reasons, "manifest:report-writer:outside") {
		t.Fatalf("call record = %+v", ev)
	}
	if r := local(t, sc, "GET", "/.bulkhead/v1/task", ""); r.str("task.id") != task.ID {
		t.Fatalf("show task: %d %s", r.status, r.raw)
	}

	if _, err := alpha.CompleteTask(context.Background(), task.ID, "done"); err != nil {
		t.Fatal(err)
	}
	sc2, err := connect.New(connect.Config{Dir: dir, ServerURL: e.URL, GatewayURL: e.GatewayURL, Listen: "127.0.0.1:0",
		Resource: gatewaytest.Resource, Task: task.ID, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = sc2.Listen(context.Background())
	if err == nil || !strings.Contains(err.Error(), "in task "+task.ID) || !strings.Contains(err.Error(), "task "+task.ID+" ended: completed at ") ||
		!strings.Contains(err.Error(), "open a new task of manifest report-writer") {
		t.Fatalf("Listen with an ended task: %v", err)
	}
}
