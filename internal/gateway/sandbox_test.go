package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

// tasks is a control plane's task side: one open task, which reports of
// suspect output taint.
type tasks struct {
	mu      sync.Mutex
	tainted map[string]string // task -> why
}

func (s *tasks) TaskState(_ context.Context, id string) (gateway.TaskState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, tainted := s.tainted[id]
	return gateway.TaskState{ID: id, Agent: "spiffe://bulkhead.local/agent/alpha", Manifest: "m", Open: true, Tainted: tainted}, nil
}

func (s *tasks) ReportOutput(_ context.Context, task, _ string, _ cedar.EntityUID, suspect string) (bool, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if suspect != "" {
		s.tainted[task] = suspect
	}
	_, tainted := s.tainted[task]
	return suspect != "", tainted, nil
}

func (s *tasks) UseGrant(context.Context, string, gateway.GrantUse) error { return nil }

// A compromised stdio tool, sandboxed, tries ptrace in an agent's task:
// the refusal is recorded with the agent and the task before the call
// returns, and the task is tainted, so what the tool says next is
// untrusted (and the guardrails refuse the task's writes).
func TestSandboxViolationTaintsTheTask(t *testing.T) {
	if err := sandbox.Check().Enforce(); err != nil {
		t.Skip(err)
	}
	cmd, env, dir := gatewaytest.SandboxedStdioCommand(t)
	src := &tasks{tainted: map[string]string{}}
	h := startGatewayWith(t, &decider{}, fmt.Sprintf(`  - name: notes
    mcp: { command: [%q, %q], env: [%q, %q], sandbox: { read: [%q] } }
    callers: ["spiffe://bulkhead.local/agent/*"]
`, cmd[0], cmd[1], env[0], env[1], dir), src)
	hc := h.agentIn(t, "alpha", "task-1")
	sid := h.sessionTo(t, hc, "notes")
	_, body, _, err := h.mcpPostTo(hc, "notes", sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","arguments":{"query":"ptrace"}}}`)
	if err != nil || !strings.Contains(body, "operation not permitted") {
		t.Fatalf("ptrace: %v %s", err, body)
	}
	var found bool
	for _, ev := range h.Rec.all() {
		if ev.Action == gateway.ActionSandboxViolation {
			found = ev.Actor.ID == "spiffe://bulkhead.local/agent/alpha" && ev.Task == "task-1" && ev.Detail["syscall"] == "ptrace"
		}
	}
	if !found {
		t.Fatalf("no violation record naming the agent and task: %v", h.Rec.actions())
	}
	src.mu.Lock()
	why := src.tainted["task-1"]
	src.mu.Unlock()
	if !strings.Contains(why, "ptrace") {
		t.Fatalf("the task was not tainted for the violation: %q", why)
	}
}
