package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

func TestRequestRevision(t *testing.T) {
	for _, tt := range []struct {
		header []string
		modern bool
		err    string
	}{
		{nil, false, ""},
		{[]string{"2025-11-25"}, false, ""},
		{[]string{"2025-06-18"}, false, ""},
		{[]string{"2026-07-28"}, true, ""},
		{[]string{"1900-01-01"}, false, `"code":-32022`},
		{[]string{"2026-07-28", "2025-11-25"}, false, `"code":-32020`},
	} {
		h := http.Header{"Mcp-Protocol-Version": tt.header}
		if tt.header == nil {
			h = http.Header{}
		}
		rev, errBody := requestRevision(h, nil, nil)
		if tt.err != "" {
			if !strings.Contains(string(errBody), tt.err) {
				t.Errorf("%v: %s, want %s", tt.header, errBody, tt.err)
			}
			continue
		}
		if errBody != nil || rev.modern != tt.modern {
			t.Errorf("%v: %+v %s", tt.header, rev, errBody)
		}
	}
	_, body := requestRevision(http.Header{"Mcp-Protocol-Version": {"1900-01-01"}}, []byte("7"), nil)
	if string(body) != `{"jsonrpc":"2.0","id":7,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2026-07-28","2025-11-25","2025-06-18","2025-03-26"],"requested":"1900-01-01"}}}` {
		t.Fatalf("UnsupportedProtocolVersion: %s", body)
	}
	// Once the upstream has said what it speaks, only what both speak.
	_, body = requestRevision(http.Header{"Mcp-Protocol-Version": {"1900-01-01"}}, nil, []string{"2026-07-28"})
	if !strings.Contains(string(body), `"supported":["2026-07-28"],`) {
		t.Fatalf("UnsupportedProtocolVersion with a known upstream: %s", body)
	}
}

func modernCall(t *testing.T, body string) *rpcmsg.Message {
	t.Helper()
	m, rerr := rpcmsg.Parse([]byte(body), 0)
	if rerr != nil {
		t.Fatal(rerr)
	}
	return m
}

// A compromised agent mirrors one thing into the headers and asks for
// another in the body, hoping an intermediary routes on the header while
// the policy decides on the body.
func TestCheckMirrored(t *testing.T) {
	rev := revision{version: revisionModern, modern: true}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	for _, tt := range []struct {
		name string
		body string
		h    http.Header
		err  string
	}{
		{"agree", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"read_file"}}, ""},
		{"base64 name", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"=?base64?cmVhZF9maWxl?="}}, ""},
		{"method differs", call, http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Name": {"read_file"}}, "Mcp-Method"},
		{"name differs", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"delete_file"}}, "does not match"},
		{"base64 name differs", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"=?base64?ZGVsZXRlX2ZpbGU=?="}}, "does not match"},
		{"no method", call, http.Header{"Mcp-Name": {"read_file"}}, "Mcp-Method"},
		{"no name", call, http.Header{"Mcp-Method": {"tools/call"}}, "Mcp-Name"},
		{"two names", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"read_file", "delete_file"}}, "exactly one"},
		{"bad base64", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"=?base64?***?="}}, "malformed"},
		{"padded plain", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {" read_file"}}, "whitespace"},
		{"no envelope", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`, http.Header{"Mcp-Method": {"tools/list"}}, "must carry"},
		{"version differs", strings.Replace(call, `"2026-07-28"`, `"2025-11-25"`, 1), http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"read_file"}}, "MCP-Protocol-Version"},
		{"name on a list", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
			http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Name": {"x"}}, "not defined"},
		{"task id", `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t1","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
			http.Header{"Mcp-Method": {"tasks/get"}, "Mcp-Name": {"t2"}}, "does not match"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkMirrored(tt.h, rev, modernCall(t, tt.body))
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("checkMirrored = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestHeaderValueEncoding(t *testing.T) {
	for _, s := range []string{"us-west1", "Hello, 世界", " padded ", "line1\nline2", "=?base64?literal?=", ""} {
		enc := encodeHeaderValue(s)
		dec, err := decodeHeaderValue(enc)
		if err != nil || dec != s {
			t.Errorf("%q → %q → %q %v", s, enc, dec, err)
		}
	}
	if encodeHeaderValue("Hello, 世界") != "=?base64?SGVsbG8sIOS4lueVjA==?=" {
		t.Fatal("the spec's example encodes differently")
	}
}

// Mcp-Param headers must mirror exactly the annotated arguments: one the
// body holds must be sent, one it does not must not, and a header the
// tool does not declare is not forwarded.
func TestParamHeaders(t *testing.T) {
	st := newMCPState(clock.NewFake(time.Unix(0, 0)))
	list, err := strictjson.Parse([]byte(`[{"name":"sql","inputSchema":{"type":"object","properties":{
		"region":{"type":"string","x-mcp-header":"Region"},
		"opts":{"type":"object","properties":{"shard":{"type":"integer","x-mcp-header":"Shard"}}},
		"query":{"type":"string"}}}},
		{"name":"bad","inputSchema":{"properties":{"n":{"type":"number","x-mcp-header":"N"}}}},
		{"name":"dup","inputSchema":{"properties":{"a":{"type":"string","x-mcp-header":"X"},"b":{"type":"string","x-mcp-header":"x"}}}}]`), strictjson.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	st.learnTools("db", list.Items(), false)
	if _, ok := st.toolHeaders("db", "bad"); ok {
		t.Fatal("a number-typed x-mcp-header was learned")
	}
	if _, ok := st.toolHeaders("db", "dup"); ok {
		t.Fatal("case-insensitively duplicate x-mcp-header values were learned")
	}
	hs, ok := st.toolHeaders("db", "sql")
	if !ok || len(hs) != 2 {
		t.Fatalf("learned %+v", hs)
	}
	args := func(s string) strictjson.Value {
		v, err := strictjson.Parse([]byte(s), strictjson.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tt := range []struct {
		name string
		args string
		in   http.Header
		err  string
		out  http.Header
	}{
		{"agree", `{"region":"us-west1","opts":{"shard":7},"query":"q"}`, http.Header{"Mcp-Param-Region": {"us-west1"}, "Mcp-Param-Shard": {"7"}}, "",
			http.Header{"Mcp-Param-Region": {"us-west1"}, "Mcp-Param-Shard": {"7"}}},
		{"integer written as 7.0", `{"region":"eu","opts":{"shard":7.0}}`, http.Header{"Mcp-Param-Region": {"eu"}, "Mcp-Param-Shard": {"7"}}, "",
			http.Header{"Mcp-Param-Region": {"eu"}, "Mcp-Param-Shard": {"7"}}},
		{"base64 value", `{"region":"Zürich"}`, http.Header{"Mcp-Param-Region": {encodeHeaderValue("Zürich")}}, "",
			http.Header{"Mcp-Param-Region": {encodeHeaderValue("Zürich")}}},
		{"undeclared header dropped", `{"region":"eu"}`, http.Header{"Mcp-Param-Region": {"eu"}, "Mcp-Param-Tenant": {"acme"}}, "",
			http.Header{"Mcp-Param-Region": {"eu"}}},
		{"header differs", `{"region":"us-west1"}`, http.Header{"Mcp-Param-Region": {"eu-central"}}, "does not match", nil},
		{"header missing", `{"region":"us-west1"}`, http.Header{}, "required", nil},
		{"header without argument", `{}`, http.Header{"Mcp-Param-Region": {"eu"}}, "absent", nil},
		{"null argument", `{"region":null}`, http.Header{}, "", http.Header{}},
		{"wrong type", `{"region":5}`, http.Header{"Mcp-Param-Region": {"5"}}, "not a string", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := paramHeaders(tt.in, hs, args(tt.args))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(tt.out) {
				t.Fatalf("forwards %v, want %v", out, tt.out)
			}
			for k, v := range tt.out {
				if out.Get(k) != v[0] {
					t.Fatalf("forwards %v, want %v", out, tt.out)
				}
			}
		})
	}
}

// Tasks are their creator's; rounds are taken once; both expire.
func TestMCPStateOwnershipAndRounds(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	st := newMCPState(clk)
	st.bindTask("files", "t1", "agent-a", "")
	st.bindTask("files", "t2", "agent-a", "sess-1")
	for _, tt := range []struct {
		server, id, agent, session string
		want                       bool
	}{
		{"files", "t1", "agent-a", "", true},
		{"files", "t1", "agent-a", "any", true},
		{"files", "t1", "agent-b", "", false},
		{"other", "t1", "agent-a", "", false},
		{"files", "t2", "agent-a", "sess-1", true},
		{"files", "t2", "agent-a", "sess-2", false},
		{"files", "t3", "agent-a", "", false},
	} {
		if got := st.ownsTask(tt.server, tt.id, tt.agent, tt.session); got != tt.want {
			t.Errorf("ownsTask(%+v) = %v", tt, got)
		}
	}
	k := roundKey("files", "agent-a", `Tool::"files/x"`, []byte("state"), []byte("{}"))
	st.rememberRound(k, round{call: "d1", n: 1})
	if r, ok := st.takeRound(k); !ok || r.call != "d1" {
		t.Fatal("round not found")
	}
	if _, ok := st.takeRound(k); ok {
		t.Fatal("a round was taken twice")
	}
	if k == roundKey("files", "agent-b", `Tool::"files/x"`, []byte("state"), []byte("{}")) {
		t.Fatal("another agent's retry names the same round")
	}
	st.rememberRound(k, round{call: "d2", n: 1})
	clk.Advance(roundTTL)
	if _, ok := st.takeRound(k); ok {
		t.Fatal("an expired round was continued")
	}
	clk.Advance(taskOwnerTTL)
	if st.ownsTask("files", "t1", "agent-a", "") {
		t.Fatal("an expired task is still owned")
	}
}
