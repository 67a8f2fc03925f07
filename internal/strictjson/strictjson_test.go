package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // canonical encoding, if accepted
		err  error
	}{
		{name: "object", in: ` { "a" : 1 , "b" : [ true , null , "x" ] } `, want: `{"a":1,"b":[true,null,"x"]}`},
		{name: "member order kept", in: `{"z":1,"a":2}`, want: `{"z":1,"a":2}`},
		{name: "numbers as written", in: `[0,-0,1.50,1e3,-2E-7,12345678901234567890]`, want: `[0,-0,1.50,1e3,-2E-7,12345678901234567890]`},
		{name: "escapes decoded", in: `"\u006dethod\/\t\u00e9\ud83d\ude00"`, want: "\"method/\\t\u00e9\U0001F600\""},
		{name: "escaped key is its decoded key", in: `{"\u006dethod":"ping"}`, want: `{"method":"ping"}`},
		{name: "control chars escaped", in: `"\u0000\u001f\b\f\n\r"`, want: `"\u0000\u001f\b\f\n\r"`},
		{name: "empty containers", in: `{"a":{},"b":[]}`, want: `{"a":{},"b":[]}`},
		{name: "raw utf8", in: `"naïve ☃"`, want: `"naïve ☃"`},
		{name: "U+2028 kept raw", in: "\"a\u2028b\"", want: "\"a\u2028b\""},

		{name: "duplicate key", in: `{"a":1,"a":2}`, err: ErrDuplicate},
		{name: "duplicate key deep", in: `{"p":{"args":[{"x":1,"x":1}]}}`, err: ErrDuplicate},
		{name: "duplicate via escape", in: `{"method":"a","\u006dethod":"b"}`, err: ErrDuplicate},
		{name: "case variant", in: `{"method":"tools/call","Method":"ping"}`, err: ErrCaseVariant},
		{name: "case variant deep", in: `{"params":{"arguments":{"path":"/a","PATH":"/b"}}}`, err: ErrCaseVariant},
		{name: "kelvin sign folds with k", in: "{\"k\":1,\"\u212a\":2}", err: ErrCaseVariant},
		{name: "long s folds with s", in: "{\"status\":1,\"\u017ftatus\":2}", err: ErrCaseVariant},
		{name: "duplicate in a large object", in: `{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"e":2}`, err: ErrDuplicate},
		{name: "case variant in a large object", in: `{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"J":2}`, err: ErrCaseVariant},
		{name: "invalid utf8", in: "\"\xff\"", err: ErrUTF8},
		{name: "overlong utf8", in: "\"\xc0\xae\"", err: ErrUTF8},
		{name: "utf8 surrogate bytes", in: "\"\xed\xa0\x80\"", err: ErrUTF8},
		{name: "invalid utf8 in key", in: "{\"a\xff\":1}", err: ErrUTF8},
		{name: "lone high surrogate", in: `"\ud800"`, err: ErrSurrogate},
		{name: "lone high surrogate then text", in: `"\ud800abcdef"`, err: ErrSurrogate},
		{name: "high then high", in: `"\ud800\ud800"`, err: ErrSurrogate},
		{name: "lone low surrogate", in: `"\udc00"`, err: ErrSurrogate},
		{name: "too deep", in: strings.Repeat("[", 65) + strings.Repeat("]", 65), err: ErrDepth},
		{name: "two values", in: `{} {}`, err: ErrTrailing},
		{name: "trailing garbage", in: `{}x`, err: ErrTrailing},
		{name: "bom", in: "\ufeff{}", err: ErrSyntax},
		{name: "single quotes", in: `{'a':1}`, err: ErrSyntax},
		{name: "trailing comma", in: `{"a":1,}`, err: ErrSyntax},
		{name: "leading zero", in: `01`, err: ErrTrailing},
		{name: "bare dot", in: `1.`, err: ErrSyntax},
		{name: "plus sign", in: `+1`, err: ErrSyntax},
		{name: "nan", in: `NaN`, err: ErrSyntax},
		{name: "raw control char", in: "\"a\nb\"", err: ErrSyntax},
		{name: "bad escape", in: `"\x41"`, err: ErrSyntax},
		{name: "short unicode escape", in: `"\u12"`, err: ErrSyntax},
		{name: "empty", in: ``, err: ErrSyntax},
		{name: "unterminated", in: `{"a":"b`, err: ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Parse([]byte(tt.in), Limits{})
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Parse = %v, want %v", err, tt.err)
				}
				var e *Error
				if !errors.As(err, &e) || e.Offset < 0 || e.Offset > len(tt.in) {
					t.Fatalf("error %v has no sane offset", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := string(v.Encode()); got != tt.want {
				t.Fatalf("Encode = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestFold(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"method", "METHOD"}, {"k", "\u212a"}, {"s", "\u017f"}, {"σ", "ς"}, {"Straße", "STRAßE"},
	} {
		if Fold(tt.a) != Fold(tt.b) || !strings.EqualFold(tt.a, tt.b) {
			t.Errorf("Fold(%q) = %q, Fold(%q) = %q", tt.a, Fold(tt.a), tt.b, Fold(tt.b))
		}
	}
	if Fold("a") == Fold("b") {
		t.Error("distinct letters fold together")
	}
}

func TestWith(t *testing.T) {
	v, err := Parse([]byte(`{"a":1,"b":2}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(v.With("a", MakeString("x")).Encode()); got != `{"a":"x","b":2}` {
		t.Fatalf("replace: %s", got)
	}
	if got := string(v.With("c", MakeArray()).Encode()); got != `{"a":1,"b":2,"c":[]}` {
		t.Fatalf("append: %s", got)
	}
	if got := string(v.Encode()); got != `{"a":1,"b":2}` {
		t.Fatalf("With changed its receiver: %s", got)
	}
}

// FuzzParse checks, for any input: Parse never panics; what it accepts,
// encoding/json accepts too and reads as the same value; the canonical
// encoding parses back to itself; and what encoding/json accepts but Parse
// refuses is refused for one of the ambiguities Parse exists to remove.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"A":2}`, `{"a":1,"a":2}`, `"\ud800"`, "\"\xff\"", `[1,2,{"x":[null,true]}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"p":"\u00e9"}}}`, `1e400`, `-0.0`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Parse(b, Limits{})
		std, stdErr := stdDecode(b)
		if err != nil {
			if stdErr == nil && !errors.Is(err, ErrDuplicate) && !errors.Is(err, ErrCaseVariant) && !errors.Is(err, ErrUTF8) &&
				!errors.Is(err, ErrSurrogate) && !errors.Is(err, ErrDepth) {
				t.Fatalf("refused %q, which encoding/json accepts, for %v", b, err)
			}
			return
		}
		if stdErr != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", b, stdErr)
		}
		enc := v.Encode()
		again, err := Parse(enc, Limits{})
		if err != nil {
			t.Fatalf("canonical %q does not parse: %v", enc, err)
		}
		if !bytes.Equal(again.Encode(), enc) {
			t.Fatalf("canonical encoding is not stable: %q then %q", enc, again.Encode())
		}
		fromEnc, err := stdDecode(enc)
		if err != nil {
			t.Fatalf("encoding/json refuses the canonical %q: %v", enc, err)
		}
		if !reflect.DeepEqual(fromEnc, std) {
			t.Fatalf("%q reads as %#v, its canonical form %q as %#v", b, std, enc, fromEnc)
		}
	})
}

// stdDecode reads b with encoding/json, numbers kept as written.
func stdDecode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the value")
	}
	return v, nil
}

func BenchmarkParse(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/docs/readme.md","limit":4096,"tags":["a","b"]}}}`)
	b.Run("strictjson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, err := Parse(msg, Limits{})
			if err != nil {
				b.Fatal(err)
			}
			_ = v.Encode()
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v any
			if err := json.Unmarshal(msg, &v); err != nil {
				b.Fatal(err)
			}
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
