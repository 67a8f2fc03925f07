package connect_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// An agent in Python, with nothing but the standard library and the
// sidecar's address, does the whole elevation story through the sidecar
// (testdata/elevation_agent.py): opens a task, is denied a write, asks for
// elevation, fails to approve it itself, is approved by a human, writes,
// completes the task and is denied again. The control plane's records
// tell the same story.
func TestPythonAgentThroughTheSidecar(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	e := withManifest(t)
	dir, _ := e.Agent(t, "alpha", "reader")
	sc := start(t, e, dir, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/elevation_agent.py", sc.URL(), "45")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type step struct {
		Event, Task, Elevation, Decision, Code, Error, Text string
	}
	var steps []step
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		var s step
		if err := json.Unmarshal(lines.Bytes(), &s); err != nil {
			t.Errorf("agent printed %q", lines.Text())
			continue
		}
		t.Logf("agent: %s", lines.Text())
		steps = append(steps, s)
		if s.Event == "elevation_requested" {
			// The human approver, with the provenance in front of them.
			if _, err := e.Operator.ApproveElevation(context.Background(), s.Elevation, s.Task, "report week 45"); err != nil {
				t.Errorf("approve: %v", err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the Python agent failed: %v\nstderr:\n%s", err, stderr.String())
	}
	var got []string
	for _, s := range steps {
		got = append(got, s.Event)
	}
	want := []string{"task_opened", "write_denied", "elevation_requested", "self_approval_refused", "elevation_active", "write_allowed", "task_completed", "done"}
	if !slices.Equal(got, want) {
		t.Fatalf("agent steps %v, want %v", got, want)
	}
	task, el := steps[0].Task, steps[2].Elevation
	if s := steps[3]; s.Code != "forbidden" || !strings.Contains(s.Error, "an agent can never approve") {
		t.Fatalf("self-approval answer = %+v", s)
	}

	// The records: denied in the task, the refused self-approval, the
	// human's grant, the allowed call spending it, the completion, and the
	// denial back at baseline.
	byDecision := map[string]audit.Event{}
	for _, ev := range events(t, e, "gateway.call_tool") {
		byDecision[ev.Detail["decision_id"]] = ev
	}
	if ev := byDecision[steps[1].Decision]; ev.Task != task || ev.Decision != audit.Deny || !slices.Contains(ev.Reasons, "manifest:report-writer:outside") {
		t.Fatalf("first write's record = %+v", ev)
	}
	if ev := byDecision[steps[7].Decision]; ev.Task != "" || ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
		t.Fatalf("last write's record = %+v", ev)
	}
	var allowed []audit.Event
	for _, ev := range byDecision {
		if ev.Decision == audit.Allow && ev.Detail["grant"] == el {
			allowed = append(allowed, ev)
		}
	}
	if len(allowed) != 1 || allowed[0].Task != task {
		t.Fatalf("calls allowed by the grant: %+v", allowed)
	}
	// The agent's attempt and the human's approval race; each is
	// recorded, with its own outcome.
	approvals := map[string]audit.Event{}
	for _, ev := range events(t, e, "elevation.approve") {
		if _, dup := approvals[ev.Actor.ID]; dup {
			t.Fatalf("two approval records by %s", ev.Actor.ID)
		}
		approvals[ev.Actor.ID] = ev
	}
	if ev := approvals["spiffe://bulkhead.local/agent/alpha"]; ev.Decision != audit.Deny || ev.Task != task || ev.Detail["elevation"] != el ||
		!strings.Contains(strings.Join(ev.Reasons, " "), "an agent can never approve") {
		t.Fatalf("self-approval record = %+v", ev)
	}
	if ev := approvals["spiffe://bulkhead.local/operator/admin"]; ev.Decision != audit.Allow || len(approvals) != 2 {
		t.Fatalf("approval records = %+v", approvals)
	}
	if evs := events(t, e, "task.complete"); len(evs) != 1 || evs[0].Task != task || evs[0].Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
		t.Fatalf("completion records = %+v", evs)
	}
	if e.Files.Calls.Load() != 1 {
		t.Fatalf("the upstream saw %d calls, want the one the grant allowed", e.Files.Calls.Load())
	}
}
