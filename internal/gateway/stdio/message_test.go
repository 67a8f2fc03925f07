package stdio

import (
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// slowCall is a call that stays pending until cancelled.
func slowCall() *mcp.CallToolParams {
	return &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"ms": 10000}}
}

func TestParseMessage(t *testing.T) {
	id1, _ := jsonrpc.MakeID(float64(1))
	idNeg, _ := jsonrpc.MakeID(float64(-9007199254740991))
	idS, _ := jsonrpc.MakeID("x")
	tests := []struct {
		name    string
		body    string
		kind    string // "call", "notification", "response"
		id      jsonrpc.ID
		code    int64
		errText string
	}{
		{name: "call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, kind: "call", id: id1},
		{name: "whitespace around", body: " \n{ \"jsonrpc\" : \"2.0\", \"id\" : 1, \"method\" : \"ping\" }\n ", kind: "call", id: id1},
		{name: "escaped member name", body: `{"jsonrpc":"2.0","id":1,"\u006dethod":"ping"}`, kind: "call", id: id1},
		{name: "smallest safe id", body: `{"jsonrpc":"2.0","id":-9007199254740991,"method":"ping"}`, kind: "call", id: idNeg},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, kind: "notification"},
		{name: "result", body: `{"jsonrpc":"2.0","id":"x","result":{}}`, kind: "response", id: idS},
		{name: "error", body: `{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"no","data":[1]}}`, kind: "response", id: idS},

		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, code: jsonrpc.CodeInvalidRequest, errText: "batches"},
		{name: "garbage", body: `{nope`, code: jsonrpc.CodeParseError},
		{name: "number", body: `12`, code: jsonrpc.CodeInvalidRequest},
		{name: "deep", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":` + strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat(`}`, 64) + `}`,
			code: jsonrpc.CodeInvalidRequest, errText: "deeper than 64"},
		{name: "brackets in strings do not count", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":{"s":"` + strings.Repeat(`[{\"`, 100) + `"}}`, kind: "call", id: id1},
		{name: "exponent id", body: `{"jsonrpc":"2.0","id":1e2,"method":"m"}`, code: jsonrpc.CodeInvalidRequest, errText: `"id"`},
		{name: "negative zero float id", body: `{"jsonrpc":"2.0","id":-0.0,"method":"m"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "id 2^53", body: `{"jsonrpc":"2.0","id":9007199254740992,"method":"m"}`, code: jsonrpc.CodeInvalidRequest},
		{name: "error echoes a valid id", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":[]}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "null params", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":null}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "array result", body: `{"jsonrpc":"2.0","id":1,"result":[]}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "response with params", body: `{"jsonrpc":"2.0","id":1,"result":{},"params":{}}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "error object with extra member", body: `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","x":1}}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "error message not string", body: `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":2}}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "long method", body: `{"jsonrpc":"2.0","id":1,"method":"` + strings.Repeat("m", 257) + `"}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "method with space", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call "}`, id: id1, code: jsonrpc.CodeInvalidRequest},
		{name: "unicode method", body: `{"jsonrpc":"2.0","id":1,"method":"tööls"}`, id: id1, code: jsonrpc.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, rerr := parseMessage([]byte(tt.body), 64)
			if tt.code != 0 {
				if rerr == nil {
					t.Fatalf("accepted %#v", msg)
				}
				if rerr.code != tt.code || rerr.id != tt.id || !strings.Contains(rerr.msg, tt.errText) || rerr.status != 400 {
					t.Fatalf("got %+v, want code %d id %v mentioning %q", rerr, tt.code, tt.id.Raw(), tt.errText)
				}
				return
			}
			if rerr != nil {
				t.Fatalf("refused: %v", rerr)
			}
			var kind string
			var id jsonrpc.ID
			switch m := msg.(type) {
			case *jsonrpc.Request:
				kind, id = "notification", m.ID
				if m.IsCall() {
					kind = "call"
				}
			case *jsonrpc.Response:
				kind, id = "response", m.ID
			}
			if kind != tt.kind || id != tt.id {
				t.Fatalf("got %s %v, want %s %v", kind, id.Raw(), tt.kind, tt.id.Raw())
			}
			line, err := encodeLine(msg)
			if err != nil || strings.Count(string(line), "\n") != 1 {
				t.Fatalf("encodeLine = %q, %v", line, err)
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, true},
		{[]string{"application/json, text/event-stream"}, true},
		{[]string{"text/event-stream", "application/json;q=0.9"}, true},
		{[]string{"Application/JSON"}, true},
		{[]string{"application/*"}, true},
		{[]string{"*/*"}, true},
		{[]string{"text/event-stream"}, false},
		{[]string{"application/jsonx"}, false},
	}
	for _, tt := range tests {
		r, _ := newRequest(tt.accept)
		if got := accepts(r, "application/json"); got != tt.want {
			t.Errorf("accepts(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}
