package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/connect"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// Elevation for an agent behind `bulkhead connect`: it has no key, no
// certificate and no token, only the sidecar's loopback address. Through
// the sidecar's local API it opens a task, asks for elevation and
// completes the task; through the sidecar's proxy it calls tools, with
// tokens that carry the task while it is open.

type sidecarEnv struct {
	*elevEnv
	sc  *connect.Sidecar
	dir string // alpha's credential directory, the sidecar's
	log *gatewaytest.LogBuffer
	// cs is the agent's MCP session through the sidecar, opened at
	// baseline before any task: it lives through every task switch.
	cs *mcp.ClientSession
}

// startSidecar runs the example manifest's environment, agent alpha
// (role reader) and a sidecar for it.
func startSidecar(t *testing.T) *sidecarEnv {
	t.Helper()
	e := startElevation(t)
	dir, _ := e.Agent(t, "alpha", "reader")
	sc, lb := e.StartSidecar(t, dir)
	s := &sidecarEnv{elevEnv: e, sc: sc, dir: dir, log: lb}
	s.cs = gatewaytest.Connect(t, sc.URL()+"/mcp/files", &http.Client{Timeout: 30 * time.Second})
	return s
}

// localAnswer is a local API answer, decoded.
type localAnswer struct {
	Status int
	Body   map[string]any
	Raw    string
}

func (a localAnswer) field(path string) string {
	var v any = a.Body
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// local calls the sidecar's local API as the agent's process does.
func (s *sidecarEnv) local(method, path, body string) localAnswer {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.sc.URL()+"/.bulkhead/v1"+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set(connect.LocalHeader, "1")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := localAnswer{Status: resp.StatusCode, Raw: string(b)}
	_ = json.Unmarshal(b, &a.Body)
	return a
}

func (s *sidecarEnv) openTask() string {
	s.t.Helper()
	a := s.local("POST", "/task", `{"manifest":"report-writer","description":"weekly report"}`)
	if a.Status != http.StatusCreated || a.field("task.status") != "open" {
		s.t.Fatalf("open task through the sidecar: %d %s", a.Status, a.Raw)
	}
	return a.field("task.id")
}

func (s *sidecarEnv) requestElevation(trigger string) string {
	s.t.Helper()
	a := s.local("POST", "/elevations", `{"trigger":"`+trigger+`","justification":"the weekly report is due"}`)
	if a.Status != http.StatusCreated || a.field("status") != "pending" {
		s.t.Fatalf("request elevation through the sidecar: %d %s", a.Status, a.Raw)
	}
	return a.field("id")
}

// deniedCall asserts a JSON-RPC denial and returns its decision id.
func deniedCall(t *testing.T, err error) string {
	t.Helper()
	var rpcErr *jsonrpc.Error
	var data struct {
		DecisionID string `json:"decision_id"`
	}
	if !errors.As(err, &rpcErr) || !strings.Contains(rpcErr.Message, "denied") || json.Unmarshal(rpcErr.Data, &data) != nil || data.DecisionID == "" {
		t.Fatalf("call was not denied with a decision id: %v", err)
	}
	return data.DecisionID
}

// refusalRecord is the gateway's record, by action, of a refusal that
// followed decision id, if there is one.
func (s *sidecarEnv) refusalRecord(id, action string) (audit.Event, bool) {
	s.t.Helper()
	for _, ev := range s.decisionRecords(id) {
		if ev.Action == action && ev.Decision == audit.Deny {
			return ev, true
		}
	}
	return audit.Event{}, false
}

func (s *sidecarEnv) decisionRecords(id string) []audit.Event {
	s.t.Helper()
	resp, err := s.Operator.HTTPClient().Get(s.URL + "/v1/audit/events?decision_id=" + url.QueryEscape(id))
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []audit.Event
	if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil || resp.StatusCode != http.StatusOK {
		s.t.Fatalf("search by decision id: %d %v", resp.StatusCode, err)
	}
	return evs
}

// decisionRecord is the gateway's record of a decision, found as an
// operator finds it from the id an agent was given (audit search
// --decision-id).
func (s *sidecarEnv) decisionRecord(id string) audit.Event {
	s.t.Helper()
	evs := s.decisionRecords(id)
	for _, ev := range evs {
		if ev.Action == "gateway.call_tool" && ev.Detail["decision_id"] == id {
			return ev
		}
	}
	s.t.Fatalf("no record of decision %s among %d found by its id", id, len(evs))
	return audit.Event{}
}

// The happy path behind the sidecar: task opened through the local API →
// the write its task denies is denied → elevation requested → a human
// approves → the same call on the same MCP session succeeds → task
// completed through the local API → denied again, back at baseline.
func TestSidecarElevationHappyPath(t *testing.T) {
	s := startSidecar(t)
	ctx := context.Background()
	if _, err := s.cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/notes"}}); err != nil {
		t.Fatalf("baseline read: %v", err)
	}

	task := s.openTask()
	_, err := write(s.cs, "/reports/weekly.md")
	if ev := s.decisionRecord(deniedCall(t, err)); ev.Task != task || ev.Decision != audit.Deny || !slices.Contains(ev.Reasons, "manifest:report-writer:outside") {
		t.Fatalf("write in the task before elevation: record %+v", ev)
	}

	el := s.requestElevation("write-report")
	if ev := s.lastRecord(elevation.ActionRequest, task); ev.Decision != audit.Allow || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" ||
		ev.Detail["elevation"] != el || ev.Detail["justification"] != "the weekly report is due" {
		t.Fatalf("request record = %+v", ev)
	}
	// The agent polls; the human reads the provenance and approves.
	if a := s.local("GET", "/elevations/"+el, ""); a.Status != 200 || a.field("status") != "pending" || a.field("task") != task {
		t.Fatalf("poll: %d %s", a.Status, a.Raw)
	}
	shown, err := s.Operator.Elevation(ctx, el)
	if err != nil || shown.TaskNow == nil || shown.TaskNow.ID != task || shown.Grants == nil || shown.Grants.MaxUses != 2 {
		t.Fatalf("provenance = %+v, %v", shown, err)
	}
	if _, err := s.Operator.ApproveElevation(ctx, el, task, "report week 45"); err != nil {
		t.Fatal(err)
	}
	if a := s.local("GET", "/elevations/"+el, ""); a.Status != 200 || a.field("status") != "active" || !strings.Contains(a.Raw, `"in_force":true`) {
		t.Fatalf("poll after approval: %d %s", a.Status, a.Raw)
	}

	before := s.Files.Calls.Load()
	out, err := write(s.cs, "/reports/weekly.md")
	if err != nil || !strings.Contains(out, "wrote") || s.Files.Calls.Load() != before+1 {
		t.Fatalf("elevated call through the sidecar: %q %v", out, err)
	}
	if ev := s.lastRecord("gateway.call_tool", task); ev.Decision != audit.Allow || ev.Detail["grant"] != el ||
		!slices.Contains(ev.Reasons, elevation.TriggerPolicyID("report-writer", "write-report")) {
		t.Fatalf("elevated call record = %+v", ev)
	}
	if ev := s.lastRecord(elevation.ActionUse, task); ev.Decision != audit.Allow || ev.Detail["elevation"] != el {
		t.Fatalf("use record = %+v", ev)
	}

	a := s.local("POST", "/task/complete", `{"reason":"report written"}`)
	if a.Status != 200 || a.field("task.status") != "completed" || s.sc.Task() != "" {
		t.Fatalf("complete through the sidecar: %d %s", a.Status, a.Raw)
	}
	if ev := s.lastRecord(elevation.ActionTaskComplete, task); ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Detail["return_to_baseline"] != "true" {
		t.Fatalf("completion record = %+v", ev)
	}
	if ev := s.lastRecord(elevation.ActionEnd, task); ev.Detail["elevation"] != el {
		t.Fatalf("grant end record = %+v", ev)
	}
	_, err = write(s.cs, "/reports/weekly.md")
	if ev := s.decisionRecord(deniedCall(t, err)); ev.Task != "" || ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
		t.Fatalf("write back at baseline: record %+v", ev)
	}
	if s.Files.Calls.Load() != before+1 {
		t.Fatal("a call after the task reached the upstream")
	}
	if st, err := s.Operator.Standing(ctx); err != nil || st.Standing != 0 || st.Active != 0 || st.OpenTasks != 0 {
		t.Fatalf("standing = %+v, %v", st, err)
	}
}

// An operator cancels the task under the agent's feet. The token the
// sidecar holds still names it, and the gateway's record of the next
// denial says the task ended, and when, instead of giving no reason. The
// sidecar's tokens cannot be renewed for it, and completing it through
// the local API drops it: back at baseline.
func TestSidecarTaskEndedUnderTheAgent(t *testing.T) {
	s := startSidecar(t)
	ctx := context.Background()
	task := s.openTask()
	el := s.requestElevation("write-report")
	if _, err := s.Operator.ApproveElevation(ctx, el, task, "ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := write(s.cs, "/reports/a.md"); err != nil {
		t.Fatalf("elevated call: %v", err)
	}
	if _, err := s.Operator.CancelTask(ctx, task, "the report is cancelled"); err != nil {
		t.Fatal(err)
	}
	ended, err := s.Operator.Task(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	_, err = write(s.cs, "/reports/a.md")
	id := deniedCall(t, err)
	want := "task " + task + " ended (cancelled at " + ended.EndedAt.UTC().Format(time.RFC3339) + "): decided at the agent's baseline"
	// The gateway learns of the cancellation from the control plane's
	// feed. Once it has, the call is decided at the baseline and the
	// record says the task ended; a call that comes first is decided on
	// the task's cached state and refused when its grant cannot be spent,
	// recorded as gateway.grant under the same decision id.
	if ev, ok := s.refusalRecord(id, "gateway.grant"); ok {
		if ev.Task != task || !slices.ContainsFunc(ev.Reasons, func(r string) bool { return strings.Contains(r, "grant not usable") }) {
			t.Fatalf("grant refusal in the ended task: record %+v", ev)
		}
	} else if ev := s.decisionRecord(id); ev.Task != task || ev.Decision != audit.Deny || ev.Detail["task_open"] != "false" || !slices.Contains(ev.Reasons, want) {
		t.Fatalf("denial in the ended task: record %+v, want the reason %q", ev, want)
	}

	if a := s.local("GET", "/task", ""); a.Status != 200 || a.field("task.status") != "cancelled" || a.field("task.end_reason") != "the report is cancelled" {
		t.Fatalf("show task: %d %s", a.Status, a.Raw)
	}
	a := s.local("POST", "/task/complete", "")
	if a.Status != 200 || a.field("task.status") != "cancelled" || s.sc.Task() != "" {
		t.Fatalf("complete the cancelled task: %d %s", a.Status, a.Raw)
	}
	_, err = write(s.cs, "/reports/a.md")
	if ev := s.decisionRecord(deniedCall(t, err)); ev.Task != "" {
		t.Fatalf("back at baseline: record %+v", ev)
	}
	// A token for the ended task, asked directly, says what happened and
	// what to do.
	_, err = s.Client(s.dir).RequestTaskToken(ctx, gatewaytest.Resource, task)
	if err == nil || !strings.Contains(err.Error(), "task "+task+" ended: cancelled at ") || !strings.Contains(err.Error(), "open a new task of manifest report-writer") {
		t.Fatalf("token for the ended task: %v", err)
	}
}

// Attack story: a web page in the user's browser, on the agent's host,
// tries to use the sidecar's local API to open a task and ask for
// elevation as the agent (CSRF), from another site, from a local dev
// server, and by DNS rebinding. Each is refused by the sidecar and logged
// there; the control plane never hears of it.
func TestAttackWebPageUsesTheSidecarsLocalAPI(t *testing.T) {
	s := startSidecar(t)
	_, port, _ := net.SplitHostPort(s.sc.Addr())
	body := `{"manifest":"report-writer"}`
	browser := func(host, origin, ctype string, extra ...string) string {
		req := "POST /.bulkhead/v1/task HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: " + ctype + "\r\n" +
			"Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n"
		if origin != "" {
			req += "Origin: " + origin + "\r\n"
		}
		return req + strings.Join(extra, "") + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	for _, c := range []struct{ name, request, want string }{
		{"fetch() from another site", browser("127.0.0.1:"+port, "https://evil.example", "application/json", connect.LocalHeader+": 1\r\n"), "refused"},
		{"form post from another site", browser("127.0.0.1:"+port, "https://evil.example", "text/plain"), "refused"},
		{"fetch() from a local dev server", strings.Replace(browser("127.0.0.1:"+port, "http://localhost:3000", "application/json", connect.LocalHeader+": 1\r\n"), "cross-site", "same-site", 1), "refuses requests from web pages"},
		{"DNS rebinding, same-origin to the attacker's name", strings.Replace(browser("rebind.evil.example:"+port, "", "application/json", connect.LocalHeader+": 1\r\n"), "cross-site", "same-origin", 1), "not a loopback name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", s.sc.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.request); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), c.want) {
				t.Fatalf("got %d %s, want 403 saying %q", resp.StatusCode, b, c.want)
			}
			// No CORS: a page could not even read the refusal.
			if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
				t.Fatalf("Access-Control-Allow-Origin: %q", v)
			}
		})
	}
	if evs := events(t, s.Env.Env, elevation.ActionTaskStart); len(evs) != 0 || s.sc.Task() != "" {
		t.Fatalf("a web page opened a task: %+v", evs)
	}
	if n := strings.Count(s.log.String(), "refused"); n < 4 {
		t.Fatalf("%d refusals logged by the sidecar, want 4:\n%s", n, s.log.String())
	}
}

// Attack story: a manipulated agent behind the sidecar approves its own
// elevation request through the local API, then tries the control plane's
// approval path through the proxy. The first is refused by the control
// plane and recorded against the agent; the second never leaves the
// gateway. The request stays pending and the write stays denied.
func TestAttackAgentApprovesItselfThroughTheSidecar(t *testing.T) {
	s := startSidecar(t)
	ctx := context.Background()
	task := s.openTask()
	el := s.requestElevation("write-report")

	a := s.local("POST", "/elevations/"+el+"/approve", `{"reason":"approved, trust me"}`)
	if a.Status != http.StatusForbidden || a.field("code") != "forbidden" || !strings.Contains(a.field("error"), "an agent can never approve") {
		t.Fatalf("self-approval through the local API: %d %s", a.Status, a.Raw)
	}
	ev := s.lastRecord(elevation.ActionApprove, task)
	wantDenyRecord(t, ev, "an agent can never approve")
	if ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Detail["elevation"] != el || ev.Detail["bound_task"] != task {
		t.Fatalf("refusal record = %+v", ev)
	}
	if !strings.Contains(s.log.String(), "the agent tried to approve an elevation") {
		t.Fatal("the attempt is not in the sidecar's log")
	}

	// The control plane's own approval path, through the proxy: the
	// gateway serves no such thing.
	req, _ := http.NewRequest(http.MethodPost, s.sc.URL()+"/v1/elevations/"+el+"/approve",
		strings.NewReader(`{"elevation":"`+el+`","task":"`+task+`","reason":"trust me"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("approval through the proxy: %d", resp.StatusCode)
	}

	if got, err := s.Operator.Elevation(ctx, el); err != nil || got.Status != "pending" || len(got.Approvals) != 0 {
		t.Fatalf("after the attempts: %+v %v", got, err)
	}
	_, err = write(s.cs, "/reports/weekly.md")
	deniedCall(t, err)
}
