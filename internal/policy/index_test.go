package policy

import (
	"testing"

	"github.com/cedar-policy/cedar-go"
)

// Policies that differ only in their scopes share one compiled body (what
// keeps a large fleet's decisions in cache); a policy whose scope the index
// cannot check exactly keeps its own, and so does one whose conditions
// differ.
func TestTemplatedPoliciesShareABody(t *testing.T) {
	s, err := Compile([]File{{Name: "fleet.cedar", Content: `
@id("a") permit (principal == Agent::"spiffe://bulkhead.local/agent/a", action == Action::"call_tool", resource in ToolServer::"docs") when { context.risk < 80 };
@id("b") permit (principal == Agent::"spiffe://bulkhead.local/agent/b", action == Action::"call_tool", resource in ToolServer::"code") when { context.risk < 80 };
@id("c") permit (principal in Role::"reader", action in Action::"read", resource) when { context.risk < 80 };
@id("d") permit (principal == Agent::"spiffe://bulkhead.local/agent/d", action == Action::"call_tool", resource in ToolServer::"docs") when { context.risk < 50 };
@id("e") permit (principal is Agent in Role::"writer", action == Action::"call_tool", resource) when { context.risk < 80 };
@id("f") forbid (principal == Agent::"spiffe://bulkhead.local/agent/a", action == Action::"call_tool", resource in ToolServer::"code") when { context.risk < 80 };
`}})
	if err != nil {
		t.Fatal(err)
	}
	eval := map[string]*cedar.Policy{}
	for _, m := range []map[cedar.EntityUID]*bucket{s.index.eq, s.index.in} {
		for _, b := range m {
			for _, e := range b.small {
				eval[string(e.id)] = e.eval
			}
		}
	}
	own := func(id string) *cedar.Policy { p, _ := s.Policy(id); return p }
	cases := []struct {
		a, b  string
		share bool
	}{
		{"a", "b", true},  // one template, two agents and servers
		{"a", "c", true},  // a role's grant with the same conditions
		{"a", "d", false}, // other conditions
		{"a", "f", false}, // other effect
	}
	for _, c := range cases {
		if same := eval[c.a] == eval[c.b]; same != c.share {
			t.Errorf("policies %s and %s share a body: %v, want %v", c.a, c.b, same, c.share)
		}
	}
	if eval["e"] != own("e") {
		t.Error(`"is T in E" is filed under E only: its own policy must check the type`)
	}
	if eval["a"] == own("a") {
		t.Error("an exactly indexed policy should evaluate its shared body")
	}
}
