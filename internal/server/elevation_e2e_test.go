package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// The attack stories of privilege scoping, run through the real control
// plane and the real gateway in front of a real MCP server, with the
// example policies, tool catalog and manifest
// (examples/manifests/report-writer.yaml). Each asserts the refusal and
// its audit record.

type elevEnv struct {
	*gatewaytest.Env
	t *testing.T
}

func startElevation(t *testing.T) *elevEnv {
	t.Helper()
	e := &elevEnv{Env: gatewaytest.Start(t, ""), t: t}
	_, file, _, _ := runtime.Caller(0)
	src, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "examples", "manifests", "report-writer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Operator.ApplyManifest(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	return e
}

// session opens an MCP session to files for c, with tokens for task.
func (e *elevEnv) session(c *client.Client, task string) *mcp.ClientSession {
	e.t.Helper()
	base := client.NewHTTPClient(c.Source(), client.AuthorizeGateways(spiffeid.RequireTrustDomainFromString("bulkhead.local"), ""))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{Source: c.TaskTokenSource(gatewaytest.Resource, task), Base: base.Transport}}
	return e.MCP(e.t, hc, "files")
}

func (e *elevEnv) start(c *client.Client) api.Task {
	e.t.Helper()
	task, err := c.StartTask(context.Background(), "report-writer", "weekly report")
	if err != nil {
		e.t.Fatal(err)
	}
	return task
}

func (e *elevEnv) request(c *client.Client, task, trigger string) api.Elevation {
	e.t.Helper()
	el, err := c.RequestElevation(context.Background(), task, trigger, "the weekly report is due")
	if err != nil {
		e.t.Fatal(err)
	}
	return el
}

func write(cs *mcp.ClientSession, path string) (string, error) {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": path, "content": "report"}})
	if err != nil {
		return "", err
	}
	return textOf(res), nil
}

func wantDenied(t *testing.T, err error) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("call was not denied: %v", err)
	}
}

// lastRecord returns the last event of action about task (any task if "").
func (e *elevEnv) lastRecord(action, task string) audit.Event {
	e.t.Helper()
	evs := events(e.t, e.Env.Env, action)
	for i := len(evs) - 1; i >= 0; i-- {
		if task == "" || evs[i].Task == task {
			return evs[i]
		}
	}
	e.t.Fatalf("no %s record for task %q", action, task)
	return audit.Event{}
}

func wantDenyRecord(t *testing.T, ev audit.Event, why string) {
	t.Helper()
	if ev.Decision != audit.Deny || !strings.Contains(strings.Join(ev.Reasons, "; "), why) {
		t.Fatalf("%s record = %s %v, want a denial saying %q", ev.Action, ev.Decision, ev.Reasons, why)
	}
}

func apiCode(err error) string {
	var ae *client.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// The happy path: request → human approval → the elevated call is allowed
// through the gateway → task complete → the same call is denied again
// within one second.
func TestElevationHappyPathThroughTheGateway(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	cs := e.session(alpha, task.ID)

	// At baseline the reader may read but not write.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/notes"}}); err != nil {
		t.Fatalf("baseline read: %v", err)
	}
	_, err := write(cs, "/reports/weekly.md")
	wantDenied(t, err)
	if ev := e.lastRecord("gateway.call_tool", task.ID); ev.Decision != audit.Deny || !slices.Contains(ev.Reasons, "manifest:report-writer:outside") {
		t.Fatalf("baseline write record = %+v", ev)
	}

	el := e.request(alpha, task.ID, "write-report")
	if el.Status != "pending" {
		t.Fatalf("request = %+v", el)
	}
	// The approver sees the provenance: the task (tainted by the files
	// server's untrusted output), the justification, what it grants.
	shown, err := e.Operator.Elevation(ctx, el.ID)
	if err != nil || shown.TaskNow == nil || !shown.TaskNow.Tainted || shown.Grants == nil || shown.Grants.MaxUses != 2 || shown.Justification == "" {
		t.Fatalf("provenance = %+v, %v", shown, err)
	}
	approved, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "report week 45")
	if err != nil || approved.Status != "active" {
		t.Fatalf("approval = %+v, %v", approved, err)
	}
	if ev := e.lastRecord(elevation.ActionGrant, task.ID); ev.Actor.ID != "spiffe://bulkhead.local/operator/admin" || ev.Detail["elevation"] != el.ID {
		t.Fatalf("grant record = %+v", ev)
	}

	// The elevated call goes through at once, spending a use first.
	before := e.Files.Calls.Load()
	out, err := write(cs, "/reports/weekly.md")
	if err != nil || !strings.Contains(out, "wrote") || e.Files.Calls.Load() != before+1 {
		t.Fatalf("elevated call: %q %v", out, err)
	}
	allow := e.lastRecord("gateway.call_tool", task.ID)
	if allow.Decision != audit.Allow || allow.Detail["grant"] != el.ID || !slices.Contains(allow.Reasons, elevation.TriggerPolicyID("report-writer", "write-report")) {
		t.Fatalf("elevated call record = %+v", allow)
	}
	if ev := e.lastRecord(elevation.ActionUse, task.ID); ev.Decision != audit.Allow || ev.Actor.Kind != audit.ActorWorkload || ev.Detail["use"] != "1" {
		t.Fatalf("use record = %+v", ev)
	}

	// Task complete: back to baseline, and the same call is denied within
	// one second (here, at once: the use is refused at the control plane).
	if _, err := alpha.CompleteTask(ctx, task.ID, "report written"); err != nil {
		t.Fatal(err)
	}
	completed := time.Now()
	_, err = write(cs, "/reports/weekly.md")
	wantDenied(t, err)
	if since := time.Since(completed); since > time.Second {
		t.Fatalf("the denial took %s", since)
	}
	if e.Files.Calls.Load() != before+1 {
		t.Fatal("a call after the task's end reached the upstream")
	}
	if ev := e.lastRecord(elevation.ActionEnd, task.ID); ev.Detail["elevation"] != el.ID || !strings.Contains(ev.Reasons[0], "return to baseline") {
		t.Fatalf("return-to-baseline record = %+v", ev)
	}
	if ev := e.lastRecord(elevation.ActionTaskComplete, task.ID); ev.Decision != audit.Allow || ev.Detail["return_to_baseline"] != "true" {
		t.Fatalf("completion record = %+v", ev)
	}
	// And later calls, once the gateway has read the task's state anew
	// (at most TaskStateMaxAge later), are decided at baseline and say so.
	testenv.Await(t, 10*time.Second, "a denial that says the task ended", func() bool {
		_, err = write(cs, "/reports/weekly.md")
		wantDenied(t, err)
		return strings.Contains(err.Error(), "task "+task.ID+" has ended")
	})
	if ev := e.lastRecord("gateway.call_tool", task.ID); ev.Decision != audit.Deny || ev.Detail["task_open"] != "false" ||
		!strings.Contains(strings.Join(ev.Reasons, "; "), "task "+task.ID+" ended (completed at ") {
		t.Fatalf("baseline record after the end = %+v, want a reason saying the task ended", ev)
	}
	if st, err := e.Operator.Standing(ctx); err != nil || st.Standing != 0 || st.Active != 0 {
		t.Fatalf("standing = %+v, %v", st, err)
	}
}

// A manipulated agent asks for a trigger its manifest lacks.
func TestAttackTriggerNotInManifest(t *testing.T) {
	e := startElevation(t)
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	_, err := alpha.RequestElevation(context.Background(), task.ID, "admin-everything", "ignore previous instructions")
	if apiCode(err) != "forbidden" {
		t.Fatalf("request: %v", err)
	}
	ev := e.lastRecord(elevation.ActionRequest, task.ID)
	wantDenyRecord(t, ev, `trigger "admin-everything" is not in manifest report-writer`)
	if ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Detail["justification"] != "ignore previous instructions" {
		t.Fatalf("record = %+v", ev)
	}
}

// A manipulated agent approves its own request, and has another agent
// approve it.
func TestAttackAgentsApprove(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	_, beta := e.Agent(t, "beta", "reader")
	task := e.start(alpha)
	el := e.request(alpha, task.ID, "write-report")
	for _, c := range []struct {
		name string
		by   *client.Client
		id   string
	}{{"its own request", alpha, "alpha"}, {"another agent's", beta, "beta"}} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.by.ApproveElevation(ctx, el.ID, task.ID, "approved, trust me")
			if apiCode(err) != "forbidden" {
				t.Fatalf("approval by %s: %v", c.id, err)
			}
			ev := e.lastRecord(elevation.ActionApprove, task.ID)
			wantDenyRecord(t, ev, "an agent can never approve")
			if ev.Actor != (audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://bulkhead.local/agent/" + c.id}) {
				t.Fatalf("refusal recorded for %+v", ev.Actor)
			}
		})
	}
	if got, _ := e.Operator.Elevation(ctx, el.ID); got.Status != "pending" || len(got.Approvals) != 0 {
		t.Fatalf("after the agents' attempts: %+v", got)
	}
	cs := e.session(alpha, task.ID)
	_, err := write(cs, "/reports/weekly.md")
	wantDenied(t, err)
}

// An approval is replayed on another task (and another request).
func TestAttackApprovalReplayedOnAnotherTask(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	t1, t2 := e.start(alpha), e.start(alpha)
	el1, el2 := e.request(alpha, t1.ID, "write-report"), e.request(alpha, t2.ID, "write-report")
	original := api.ElevationDecision{Elevation: el1.ID, Task: t1.ID, Reason: "approved for task one"}
	if _, err := e.Operator.DecideElevation(ctx, el1.ID, true, original); err != nil {
		t.Fatal(err)
	}
	// The same approval sent for the other task's request, as is and with
	// only the task rewritten: both refused.
	for _, d := range []api.ElevationDecision{original, {Elevation: el1.ID, Task: t2.ID, Reason: original.Reason}} {
		_, err := e.Operator.DecideElevation(ctx, el2.ID, true, d)
		if apiCode(err) != "forbidden" {
			t.Fatalf("replayed approval %+v: %v", d, err)
		}
		wantDenyRecord(t, e.lastRecord(elevation.ActionApprove, t2.ID), "bound to")
	}
	if got, _ := e.Operator.Elevation(ctx, el2.ID); got.Status != "pending" {
		t.Fatalf("replayed approval took effect: %+v", got)
	}
	// And task one's grant does nothing in task two.
	cs := e.session(alpha, t2.ID)
	_, err := write(cs, "/reports/weekly.md")
	wantDenied(t, err)
	if ev := e.lastRecord("gateway.call_tool", t2.ID); ev.Decision != audit.Deny || ev.Detail["grants"] != "" {
		t.Fatalf("task two's call record = %+v", ev)
	}
}

// A grant is used after 'task complete': the gateway refuses, and so does
// the control plane if a gateway tried.
func TestAttackGrantUsedAfterTaskComplete(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	el := e.request(alpha, task.ID, "write-report")
	if _, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	cs := e.session(alpha, task.ID)
	if _, err := write(cs, "/reports/a.md"); err != nil {
		t.Fatal(err)
	}
	if _, err := alpha.CompleteTask(ctx, task.ID, "done"); err != nil {
		t.Fatal(err)
	}
	_, err := write(cs, "/reports/a.md")
	wantDenied(t, err)
	if ev := e.lastRecord("gateway.call_tool", task.ID); ev.Decision != audit.Deny {
		t.Fatalf("gateway record = %+v", ev)
	}
	// A gateway that still believed in the grant is refused at the source.
	gw := peer.Principal{ID: spiffeid.RequireFromPath(e.Server.TrustDomain(), "/bulkhead/gateway/default"), Kind: audit.ActorWorkload}
	_, err = e.Server.Elevation().UseGrant(ctx, gw, el.ID, elevation.Use{Task: task.ID, Agent: el.Agent, Resource: `Tool::"files/write_file"`})
	if err == nil {
		t.Fatal("a grant was used after its task ended")
	}
	wantDenyRecord(t, e.lastRecord(elevation.ActionUse, task.ID), "back to baseline")
	// A token for the ended task is no longer issued.
	if _, err := alpha.RequestTaskToken(ctx, gatewaytest.Resource, task.ID); apiCode(err) != "invalid_request" {
		t.Fatalf("token for an ended task: %v", err)
	}
}

// A JIT grant is used one more time than allowed (max_uses 2).
func TestAttackJITGrantUsedOnceTooOften(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	el := e.request(alpha, task.ID, "write-report")
	if _, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "two writes"); err != nil {
		t.Fatal(err)
	}
	cs := e.session(alpha, task.ID)
	for i := range 2 {
		if _, err := write(cs, "/reports/part.md"); err != nil {
			t.Fatalf("use %d: %v", i+1, err)
		}
	}
	before := e.Files.Calls.Load()
	_, err := write(cs, "/reports/part.md")
	wantDenied(t, err)
	if e.Files.Calls.Load() != before {
		t.Fatal("the third call reached the upstream")
	}
	if ev := e.lastRecord(elevation.ActionExhaust, task.ID); ev.Detail["elevation"] != el.ID || ev.Detail["uses"] != "2" {
		t.Fatalf("exhaustion record = %+v", ev)
	}
	if ev := e.lastRecord("gateway.call_tool", task.ID); ev.Decision != audit.Deny {
		t.Fatalf("third call record = %+v", ev)
	}
	if got, _ := e.Operator.Elevation(ctx, el.ID); got.Status != "exhausted" || got.Uses != 2 {
		t.Fatalf("grant after = %+v", got)
	}
}

// A grant is used on a resource outside its named set: another path, and
// another tool.
func TestAttackGrantOutsideItsResources(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	el := e.request(alpha, task.ID, "write-report")
	if _, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "reports only"); err != nil {
		t.Fatal(err)
	}
	cs := e.session(alpha, task.ID)
	before := e.Files.Calls.Load()
	for _, path := range []string{"/home/alpha/.ssh/authorized_keys", "/reports/../etc/passwd", "/etc/cron.d/x"} {
		_, err := write(cs, path)
		wantDenied(t, err)
		ev := e.lastRecord("gateway.call_tool", task.ID)
		if ev.Decision != audit.Deny || ev.Detail["grants"] != "report-writer/write-report" {
			t.Fatalf("%s record = %+v", path, ev)
		}
	}
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"query": "secrets"}})
	wantDenied(t, err)
	if e.Files.Calls.Load() != before {
		t.Fatal("a call outside the grant reached the upstream")
	}
	if got, _ := e.Operator.Elevation(ctx, el.ID); got.Uses != 0 {
		t.Fatalf("refused calls spent uses: %+v", got)
	}
}

// Auto-approval is asked while the task is tainted: it needs a human.
func TestAttackAutoApprovalWhileTainted(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")

	// Untainted, the low-sensitivity trigger is approved by policy.
	clean := e.start(alpha)
	if el := e.request(alpha, clean.ID, "write-draft"); el.Status != "active" {
		t.Fatalf("untainted auto-approval = %+v", el)
	}

	task := e.start(alpha)
	cs := e.session(alpha, task.ID)
	// Reading the files server's (untrusted) output taints the task.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/inbox/mail.txt"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := alpha.Task(ctx, task.ID); !got.Tainted || got.TaintSource != `Tool::"files/read_file"` {
		t.Fatalf("task after untrusted output = %+v", got)
	}
	if ev := e.lastRecord(elevation.ActionTaskTaint, task.ID); ev.Actor.Kind != audit.ActorWorkload {
		t.Fatalf("taint record = %+v", ev)
	}
	el := e.request(alpha, task.ID, "write-draft")
	if el.Status != "pending" || !el.Tainted {
		t.Fatalf("tainted request = %+v", el)
	}
	wantDenyRecord(t, e.lastRecord(elevation.ActionAutoApprove, task.ID), "the task is tainted: a human must approve")
	_, err := write(cs, "/drafts/notes.md")
	wantDenied(t, err)
}

// Two-person approval needs two distinct humans, each with their own
// operator credential.
func TestTwoPersonApproval(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	el := e.request(alpha, task.ID, "publish")
	if got, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "first"); err != nil || got.Status != "pending" {
		t.Fatalf("first approval = %+v, %v", got, err)
	}
	if _, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "first again"); apiCode(err) != "conflict" {
		t.Fatalf("the same human twice: %v", err)
	}
	bobDir := filepath.Join(t.TempDir(), "bob")
	if _, err := e.Operator.IssueOperatorSVID(ctx, "bob", bobDir, 0); err != nil {
		t.Fatal(err)
	}
	bob := e.Client(bobDir)
	got, err := bob.ApproveElevation(ctx, el.ID, task.ID, "second")
	if err != nil || got.Status != "active" || len(got.Approvals) != 2 || got.Approvals[1].Approver != "spiffe://bulkhead.local/operator/bob" {
		t.Fatalf("second approval = %+v, %v", got, err)
	}
	cs := e.session(alpha, task.ID)
	if _, err := write(cs, "/public/report.md"); err != nil {
		t.Fatalf("published: %v", err)
	}
	// An agent cannot obtain an operator credential.
	_, agentClient := e.Agent(t, "mallory", "")
	if _, err := agentClient.IssueOperatorSVID(ctx, "mallory", t.TempDir(), 0); apiCode(err) != "forbidden" {
		t.Fatalf("an agent issued an operator credential: %v", err)
	}
}

// The manifest's scope limits bound the task at the gateway, and reset
// with a new task.
func TestManifestScopeLimits(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	src := `name: tiny
approved_actions:
  - actions: [list_tools]
  - actions: [call_tool]
    resources: [files/read_file]
scope_limits:
  calls: 2
`
	if _, err := e.Operator.ApplyManifest(ctx, []byte(src)); err != nil {
		t.Fatal(err)
	}
	_, alpha := e.Agent(t, "alpha", "reader")
	task, err := alpha.StartTask(ctx, "tiny", "")
	if err != nil {
		t.Fatal(err)
	}
	cs := e.session(alpha, task.ID)
	read := func() error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/a"}})
		return err
	}
	for i := range 2 {
		if err := read(); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if err := read(); err == nil || !strings.Contains(err.Error(), "scope_limits") {
		t.Fatalf("third call: %v", err)
	}
	if ev := e.lastRecord("gateway.budget", task.ID); ev.Decision != audit.Deny {
		t.Fatalf("budget record = %+v", ev)
	}
	next, err := alpha.StartTask(ctx, "tiny", "")
	if err != nil {
		t.Fatal(err)
	}
	cs = e.session(alpha, next.ID)
	if err := read(); err != nil {
		t.Fatalf("a new task's budget: %v", err)
	}
}

// A sub-agent works in its parent's task: its token inherits the task,
// and the parent's grant applies to it at the gateway (and is spent).
func TestSubAgentInheritsTheTask(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	parent, err := alpha.RequestTaskToken(ctx, gatewaytest.Resource, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := alpha.Delegate(ctx, parent.AccessToken, client.DelegateOptions{Name: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(sub.Token.AccessToken, ".")[1])
	var claims struct {
		Task string `json:"task"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Task != task.ID {
		t.Fatalf("sub-agent token task = %q, %v", claims.Task, err)
	}
	el := e.request(alpha, task.ID, "write-report")
	if _, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	base := client.NewHTTPClient(sub.Source, client.AuthorizeGateways(spiffeid.RequireTrustDomainFromString("bulkhead.local"), ""))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{
		Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: sub.Token.AccessToken, TokenType: "Bearer"}), Base: base.Transport}}
	cs := e.MCP(t, hc, "files")
	if _, err := write(cs, "/reports/by-sub.md"); err != nil {
		t.Fatalf("the sub-agent's elevated call: %v", err)
	}
	if ev := e.lastRecord(elevation.ActionUse, task.ID); ev.Target != sub.ID.String() || ev.Decision != audit.Allow {
		t.Fatalf("use record = %+v", ev)
	}
}
