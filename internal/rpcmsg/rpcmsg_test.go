package rpcmsg

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		kind    string // "request", "notification", "response"
		id      string // canonical id, "" for none
		code    int
		errText string
		// forwarded is the canonical encoding, when it differs from body.
		forwarded string
	}{
		{name: "call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, kind: "request", id: "1"},
		{name: "whitespace around", body: " \n{ \"jsonrpc\" : \"2.0\", \"id\" : 1, \"method\" : \"ping\" }\n ", kind: "request", id: "1",
			forwarded: `{"jsonrpc":"2.0","id":1,"method":"ping"}`},
		{name: "escaped member name is forwarded decoded", body: `{"jsonrpc":"2.0","id":1,"\u006dethod":"ping"}`, kind: "request", id: "1",
			forwarded: `{"jsonrpc":"2.0","id":1,"method":"ping"}`},
		{name: "smallest safe id", body: `{"jsonrpc":"2.0","id":-9007199254740991,"method":"ping"}`, kind: "request", id: "-9007199254740991"},
		{name: "string id", body: `{"jsonrpc":"2.0","id":"a\u0062","method":"ping"}`, kind: "request", id: `"ab"`, forwarded: `{"jsonrpc":"2.0","id":"ab","method":"ping"}`},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, kind: "notification"},
		{name: "result", body: `{"jsonrpc":"2.0","id":"x","result":{}}`, kind: "response", id: `"x"`},
		{name: "error", body: `{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"no","data":[1]}}`, kind: "response", id: `"x"`},

		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, code: CodeInvalidRequest, errText: "batches"},
		{name: "garbage", body: `{nope`, code: CodeParseError},
		{name: "two messages", body: `{"jsonrpc":"2.0","method":"a"}{"jsonrpc":"2.0","method":"b"}`, code: CodeParseError},
		{name: "number", body: `12`, code: CodeInvalidRequest},
		{name: "deep", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":` + strings.Repeat(`{"a":`, 64) + `1` + strings.Repeat(`}`, 64) + `}`,
			code: CodeInvalidRequest, errText: "deeper than 64"},
		{name: "brackets in strings do not count", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":{"s":"` + strings.Repeat(`[{\"`, 100) + `"}}`, kind: "request", id: "1"},
		{name: "method case variant", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping"}`, code: CodeInvalidRequest, errText: "differ only in case"},
		{name: "lone case variant of method", body: `{"jsonrpc":"2.0","id":1,"Method":"tools/call"}`, code: CodeInvalidRequest, errText: "differs only in case"},
		{name: "duplicate method", body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, code: CodeInvalidRequest, errText: "duplicate"},
		{name: "duplicate argument deep", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":{"b":1,"b":2}}}}`, code: CodeInvalidRequest, errText: "duplicate"},
		{name: "case variant argument", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"path":"/a","Path":"/etc"}}}`, code: CodeInvalidRequest},
		{name: "invalid utf8", body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\xff\"}}", code: CodeInvalidRequest, errText: "UTF-8"},
		{name: "lone surrogate", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x\ud800"}}`, code: CodeInvalidRequest, errText: "surrogate"},
		{name: "unknown member", body: `{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}`, code: CodeInvalidRequest, errText: "unknown member"},
		{name: "exponent id", body: `{"jsonrpc":"2.0","id":1e2,"method":"m"}`, code: CodeInvalidRequest, errText: `"id"`},
		{name: "negative zero id", body: `{"jsonrpc":"2.0","id":-0,"method":"m"}`, code: CodeInvalidRequest},
		{name: "float id", body: `{"jsonrpc":"2.0","id":1.5,"method":"m"}`, code: CodeInvalidRequest},
		{name: "id 2^53", body: `{"jsonrpc":"2.0","id":9007199254740992,"method":"m"}`, code: CodeInvalidRequest},
		{name: "null id", body: `{"jsonrpc":"2.0","id":null,"method":"m"}`, code: CodeInvalidRequest},
		{name: "long id", body: `{"jsonrpc":"2.0","id":"` + strings.Repeat("i", 257) + `","method":"m"}`, code: CodeInvalidRequest},
		{name: "version", body: `{"jsonrpc":"1.0","id":1,"method":"m"}`, id: "1", code: CodeInvalidRequest},
		{name: "array params echo the id", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":[]}`, id: "1", code: CodeInvalidRequest},
		{name: "null params", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":null}`, id: "1", code: CodeInvalidRequest},
		{name: "string params", body: `{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}`, id: "1", code: CodeInvalidRequest},
		{name: "array result", body: `{"jsonrpc":"2.0","id":1,"result":[]}`, id: "1", code: CodeInvalidRequest},
		{name: "response with params", body: `{"jsonrpc":"2.0","id":1,"result":{},"params":{}}`, id: "1", code: CodeInvalidRequest},
		{name: "result and error", body: `{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}`, id: "1", code: CodeInvalidRequest},
		{name: "error object with extra member", body: `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","x":1}}`, id: "1", code: CodeInvalidRequest},
		{name: "error message not string", body: `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":2}}`, id: "1", code: CodeInvalidRequest},
		{name: "long method", body: `{"jsonrpc":"2.0","id":1,"method":"` + strings.Repeat("m", 129) + `"}`, id: "1", code: CodeInvalidRequest},
		{name: "method with space", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call "}`, id: "1", code: CodeInvalidRequest},
		{name: "unicode method", body: `{"jsonrpc":"2.0","id":1,"method":"tööls"}`, id: "1", code: CodeInvalidRequest},
		{name: "method not a string", body: `{"jsonrpc":"2.0","id":1,"method":1}`, code: CodeInvalidRequest},
		{name: "neither method nor id", body: `{"jsonrpc":"2.0"}`, code: CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, rerr := Parse([]byte(tt.body), 0)
			if tt.code != 0 {
				if rerr == nil {
					t.Fatalf("accepted: %s", m.Encode())
				}
				if rerr.Code != tt.code || string(rerr.ID) != tt.id || !strings.Contains(rerr.Message, tt.errText) {
					t.Fatalf("got %d %q id %s, want %d mentioning %q id %s", rerr.Code, rerr.Message, rerr.ID, tt.code, tt.errText, tt.id)
				}
				return
			}
			if rerr != nil {
				t.Fatalf("refused: %v", rerr)
			}
			var kind string
			switch {
			case m.IsRequest():
				kind = "request"
			case m.IsNotification():
				kind = "notification"
			case m.IsResponse():
				kind = "response"
			}
			if kind != tt.kind || string(m.IDJSON()) != tt.id {
				t.Fatalf("got %s %s, want %s %s", kind, m.IDJSON(), tt.kind, tt.id)
			}
			want := tt.forwarded
			if want == "" {
				want = tt.body
			}
			if got := string(m.Encode()); got != want {
				t.Fatalf("forwards %s, want %s", got, want)
			}
		})
	}
}

func TestErrorResponse(t *testing.T) {
	got := string(ErrorResponse(nil, CodeInvalidRequest, "bad \"x\"", strictjson.Value{}))
	if got != `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"bad \"x\""}}` {
		t.Fatal(got)
	}
	data := strictjson.MakeObject(strictjson.Member{Key: "decision_id", Value: strictjson.MakeString("d1")})
	got = string(ErrorResponse([]byte(`"a"`), -32001, "denied", data))
	if got != `{"jsonrpc":"2.0","id":"a","error":{"code":-32001,"message":"denied","data":{"decision_id":"d1"}}}` {
		t.Fatal(got)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("invalid JSON")
	}
}

// FuzzParse: whatever Parse accepts, its canonical encoding parses to the
// same message, and encoding/json (which matches keys case-insensitively
// and lets a later duplicate win) reads the same method and id from it.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":1}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping"}`,
		`{"jsonrpc":"2.0","id":"x","result":{"tools":[]}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, rerr := Parse(b, 0)
		if rerr != nil {
			return
		}
		enc := m.Encode()
		again, rerr := Parse(enc, 0)
		if rerr != nil {
			t.Fatalf("canonical %q refused: %v", enc, rerr)
		}
		if !bytes.Equal(again.Encode(), enc) || again.Method != m.Method {
			t.Fatalf("not stable: %q", enc)
		}
		var std struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if err := json.Unmarshal(enc, &std); err != nil {
			t.Fatalf("encoding/json refuses %q: %v", enc, err)
		}
		if std.Method != m.Method || !bytes.Equal(std.ID, m.IDJSON()) {
			t.Fatalf("encoding/json reads method %q id %s from %q; Parse read %q %s", std.Method, std.ID, enc, m.Method, m.IDJSON())
		}
	})
}
