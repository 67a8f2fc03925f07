package gateway_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// A compromised agent enumerates a sensitive tool, one path after
// another: past the gateway's limit of distinct sensitive resources a
// day, the next new path is refused (and recorded), while paths already
// read stay readable and other tools are not counted.
func TestBulkEnumerationOfASensitiveToolIsRefused(t *testing.T) {
	h := startGatewayWith(t, &decider{sensitivity: map[string]string{"read_file": "high", "search": "low"}},
		"sensitive: { resources_per_agent_day: 2 }\n", nil)
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)
	read := func(path string) (int, string) {
		status, body, _, err := h.mcpPost(hc, sid, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"`+path+`"}}}`)
		if err != nil {
			t.Fatal(err)
		}
		return status, body
	}
	for _, c := range []struct {
		path    string
		refused bool
	}{{"/srv/a", false}, {"/srv/b", false}, {"/srv/a", false}, {"/srv/c", true}, {"/srv/b", false}} {
		status, body := read(c.path)
		refused := strings.Contains(body, "distinct high-sensitivity resources touched today")
		if refused != c.refused || !refused && (status != http.StatusOK || !strings.Contains(body, "contents of "+c.path)) {
			t.Fatalf("%s: %d %s", c.path, status, body)
		}
	}
	if !slices.Contains(h.Rec.actions(), "gateway.budget:deny") {
		t.Fatalf("the refusal is not recorded: %v", h.Rec.actions())
	}
}

// A compromised agent delegates to sub-agents to get fresh budgets: each
// sub-agent spends its root's, so the enumeration stops at the same
// count. A tool the catalog does not rate counts too, once a limit is set.
func TestSubAgentsShareTheirRootsSensitiveBudget(t *testing.T) {
	h := startGatewayWith(t, &decider{sensitivity: map[string]string{"read_file": "high", "search": "low"}},
		"sensitive: { resources_per_agent_day: 3 }\n", nil)
	read := func(agent, tool, args string) string {
		hc := h.agent(t, agent)
		_, body, _, err := h.mcpPost(hc, h.session(t, hc), `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"`+tool+`","arguments":`+args+`}}`)
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	const refused = "distinct high-sensitivity resources touched today"
	for i, c := range []struct {
		agent, tool, args string
		refused           bool
	}{
		{"alpha", "read_file", `{"path":"/srv/a"}`, false},
		{"alpha/sub/w1", "read_file", `{"path":"/srv/b"}`, false},
		{"alpha/sub/w2", "write_file", `{"path":"/srv/c","content":"x"}`, false}, // unrated: counted
		{"alpha/sub/w3", "read_file", `{"path":"/srv/d"}`, true},
		{"alpha/sub/w1/sub/x", "read_file", `{"path":"/srv/a"}`, false}, // touched already
		{"alpha/sub/w1", "search", `{"query":"q"}`, false},              // low: not counted
		{"beta", "read_file", `{"path":"/srv/d"}`, false},               // another root
	} {
		if body := read(c.agent, c.tool, c.args); strings.Contains(body, refused) != c.refused {
			t.Fatalf("step %d, %s %s: %s", i, c.agent, c.tool, body)
		}
	}
}
