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
