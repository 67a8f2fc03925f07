package sse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t testing.TB, in string, max int) ([]Event, error) {
	t.Helper()
	r := NewReader(strings.NewReader(in), max)
	var evs []Event
	for range 1000 { // bounded: no test stream has this many events
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
	t.Fatal("too many events")
	return nil, nil
}

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    []Event
		wantErr error
	}{
		{name: "empty stream", in: ""},
		{name: "only blank lines and comments", in: "\n\n: hi\n:\n\n"},
		{name: "one event", in: "data: {\"a\":1}\n\n", want: []Event{{Data: `{"a":1}`}}},
		{name: "all fields", in: "event: message\nid: 7\nretry: 1500\ndata: x\n\n",
			want: []Event{{Type: "message", ID: "7", Retry: "1500", Data: "x"}}},
		{name: "multi-line data", in: "data: a\ndata:\ndata: b\n\n", want: []Event{{Data: "a\n\nb"}}},
		{name: "no space after colon", in: "data:x\n\n", want: []Event{{Data: "x"}}},
		{name: "only one leading space is stripped", in: "data:  x\n\n", want: []Event{{Data: " x"}}},
		{name: "trailing tab in data", in: "data: x\t\n\n", want: []Event{{Data: "x\t"}}},
		{name: "CRLF", in: "event: e\r\ndata: x\r\n\r\n", want: []Event{{Type: "e", Data: "x"}}},
		{name: "comments between fields", in: "data: a\n: keepalive\ndata: b\n\n", want: []Event{{Data: "a\nb"}}},
		{name: "unknown field ignored", in: "foo: bar\ndata: x\n\n", want: []Event{{Data: "x"}}},
		{name: "field names are case sensitive", in: "Data: x\n\n"},
		{name: "id only", in: "id: 5\n\n", want: []Event{{ID: "5"}}},
		{name: "empty fields are no event", in: "data:\nevent:\n\n"},
		{name: "last value wins", in: "event: a\nevent: b\ndata: x\n\n", want: []Event{{Type: "b", Data: "x"}}},
		{name: "two events", in: "data: 1\n\ndata: 2\n\n", want: []Event{{Data: "1"}, {Data: "2"}}},
		{name: "unicode data", in: "data: héllo ✓\n\n", want: []Event{{Data: "héllo ✓"}}},
		{name: "exactly at limit", in: "data: x\n\n", max: 9, want: []Event{{Data: "x"}}},

		{name: "lone CR", in: "data: a\rdata: b\n\n", wantErr: ErrMalformed},
		{name: "CR at end of stream", in: "data: a\n\r", wantErr: ErrMalformed},
		{name: "line without colon", in: "data\n\n", wantErr: ErrMalformed},
		{name: "event with extra leading space", in: "event:  message\ndata: x\n\n", wantErr: ErrMalformed},
		{name: "event with trailing space", in: "event: message \ndata: x\n\n", wantErr: ErrMalformed},
		{name: "id with NUL", in: "id: a\x00b\ndata: x\n\n", wantErr: ErrMalformed},
		{name: "retry not digits", in: "retry: -5\ndata: x\n\n", wantErr: ErrMalformed},
		{name: "retry too long", in: "retry: 12345678901\ndata: x\n\n", wantErr: ErrMalformed},
		{name: "data with non-breaking space", in: "data: \u00a0{}\n\n", wantErr: ErrMalformed},
		{name: "data not UTF-8", in: "data: \xff\n\n", wantErr: ErrMalformed},
		{name: "byte order mark", in: "\uFEFFdata: x\n\n", wantErr: ErrMalformed},
		{name: "ends inside event", in: "data: x\n", wantErr: io.ErrUnexpectedEOF},
		{name: "ends inside line", in: "data: x\n\ndata: y", want: []Event{{Data: "x"}}, wantErr: io.ErrUnexpectedEOF},
		{name: "ends inside comment line", in: ": x", wantErr: io.ErrUnexpectedEOF},
		{name: "over limit", in: "data: xx\n\n", max: 9, wantErr: ErrTooLarge},
		{name: "comments in an event count toward limit", in: "data: x\n: aaaa\n: bbbb\n\n", max: 16, wantErr: ErrTooLarge},
		{name: "a comment block counts toward limit", in: ": aaaa\n: bbbb\n: cccc\n\n", max: 16, wantErr: ErrTooLarge},
		{name: "keepalives between events do not add up", in: strings.Repeat(": keepalive\n\n", 1000) + "data: x\n\n", max: 16,
			want: []Event{{Data: "x"}}},
		{name: "blank lines do not add up", in: strings.Repeat("\n", 100) + "data: x\n\n", max: 16, want: []Event{{Data: "x"}}},
		{name: "long line", in: "data: " + strings.Repeat("x", 10000) + "\n\n", max: 5000, wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, tt.in, tt.max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("events = %#v, want %#v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d = %#v, want %#v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestReaderErrorIsSticky(t *testing.T) {
	r := NewReader(strings.NewReader("bad\n\ndata: x\n\n"), 0)
	_, err1 := r.Next()
	_, err2 := r.Next()
	if !errors.Is(err1, ErrMalformed) || err1 != err2 {
		t.Fatalf("errors = %v, %v; want the same ErrMalformed twice", err1, err2)
	}
}

func TestReaderSmallReads(t *testing.T) {
	in := "event: a\r\ndata: " + strings.Repeat("y", 5000) + "\r\n\r\ndata: z\n\n"
	r := NewReader(iotest.OneByteReader(strings.NewReader(in)), 0)
	ev, err := r.Next()
	if err != nil || ev.Type != "a" || len(ev.Data) != 5000 {
		t.Fatalf("first = %q, %v", ev.Type, err)
	}
	if ev, err := r.Next(); err != nil || ev.Data != "z" {
		t.Fatalf("second = %#v, %v", ev, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end = %v, want EOF", err)
	}
}

func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(iotest.ErrReader(boom), 0)
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestWriter(t *testing.T) {
	tests := []struct {
		name    string
		ev      Event
		want    string
		wantErr bool
	}{
		{name: "data", ev: Event{Data: `{"a":1}`}, want: "data: {\"a\":1}\n\n"},
		{name: "all fields", ev: Event{Type: "message", ID: "1", Retry: "10", Data: "x"},
			want: "event: message\nid: 1\nretry: 10\ndata: x\n\n"},
		{name: "multi-line", ev: Event{Data: "a\n\nb\n"}, want: "data: a\ndata: \ndata: b\ndata: \n\n"},
		{name: "leading space kept", ev: Event{Data: " x"}, want: "data:  x\n\n"},
		{name: "id only: a priming event keeps an empty data line", ev: Event{ID: "p"}, want: "id: p\ndata: \n\n"},

		{name: "empty", ev: Event{}, wantErr: true},
		{name: "newline in type injects a field", ev: Event{Type: "message\ndata: evil", Data: "x"}, wantErr: true},
		{name: "CR in id", ev: Event{ID: "a\rb", Data: "x"}, wantErr: true},
		{name: "padded type", ev: Event{Type: " message", Data: "x"}, wantErr: true},
		{name: "NUL in id", ev: Event{ID: "a\x00", Data: "x"}, wantErr: true},
		{name: "retry not digits", ev: Event{Retry: "1s", Data: "x"}, wantErr: true},
		{name: "CR in data", ev: Event{Data: "a\r\nb"}, wantErr: true},
		{name: "vertical tab ends data", ev: Event{Data: "x\v"}, wantErr: true},
		{name: "data not UTF-8", ev: Event{Data: "\xc3"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := NewWriter(&b).WriteEvent(tt.ev)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidEvent) || b.Len() != 0 {
					t.Fatalf("err = %v, wrote %q; want ErrInvalidEvent and nothing written", err, b.String())
				}
				return
			}
			if err != nil || b.String() != tt.want {
				t.Fatalf("wrote %q, %v; want %q", b.String(), err, tt.want)
			}
		})
	}
}

func TestWriteComment(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	if err := w.WriteComment("keepalive"); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteComment(""); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteComment("x\ndata: evil"); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("multi-line comment: err = %v", err)
	}
	if b.String() != ": keepalive\n\n:\n\n" {
		t.Fatalf("wrote %q", b.String())
	}
	if evs, err := readAll(t, b.String(), 0); err != nil || len(evs) != 0 {
		t.Fatalf("comments read back as %v, %v", evs, err)
	}
}

func TestWriterFlushes(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := NewWriter(rec).WriteEvent(Event{Data: "x"}); err != nil {
		t.Fatal(err)
	}
	if !rec.Flushed {
		t.Error("http.ResponseWriter not flushed")
	}
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	if err := NewWriter(bw).WriteEvent(Event{Data: "x"}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "data: x\n\n" {
		t.Errorf("bufio.Writer not flushed: %q", b.String())
	}
}

// toolsList is an MCP tools/list result as a server streams it.
const toolsList = "event: message\nid: s1_0\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n" +
	": keepalive\n\n" +
	"event: message\nid: s1_1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"read\"},{\"name\":\"delete\"}]}}\n\n"

// hideDelete removes the "delete" tool from tools/list results.
func hideDelete(ev Event) (Event, bool, error) {
	if !ev.IsMessage() {
		return ev, true, nil
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal([]byte(ev.Data), &msg); err != nil {
		return Event{}, false, err
	}
	raw, ok := msg["result"]
	if !ok {
		return ev, true, nil
	}
	var res struct {
		Tools []map[string]any `json:"tools"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return Event{}, false, err
	}
	kept := res.Tools[:0]
	for _, tool := range res.Tools {
		if tool["name"] != "delete" {
			kept = append(kept, tool)
		}
	}
	res.Tools = kept
	msg["result"], _ = json.Marshal(res)
	data, _ := json.Marshal(msg)
	ev.Data = string(data)
	return ev, true, nil
}

func TestTransform(t *testing.T) {
	errFn := errors.New("fn failed")
	tests := []struct {
		name    string
		in      string
		fn      func(Event) (Event, bool, error)
		want    string
		wantErr error
	}{
		{name: "identity", in: toolsList, fn: func(e Event) (Event, bool, error) { return e, true, nil },
			want: "event: message\nid: s1_0\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n" +
				"event: message\nid: s1_1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"read\"},{\"name\":\"delete\"}]}}\n\n"},
		{name: "filter tools", in: toolsList, fn: hideDelete,
			want: "event: message\nid: s1_0\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n" +
				"event: message\nid: s1_1\ndata: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"read\"}]}}\n\n"},
		{name: "drop", in: toolsList, fn: func(e Event) (Event, bool, error) { return e, e.ID != "s1_0", nil },
			want: "event: message\nid: s1_1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"read\"},{\"name\":\"delete\"}]}}\n\n"},
		{name: "fn error stops before writing", in: toolsList,
			fn:      func(e Event) (Event, bool, error) { return e, true, errFn },
			wantErr: errFn},
		{name: "invalid output stops", in: "data: x\n\n",
			fn:      func(e Event) (Event, bool, error) { e.Type = "a\nb"; return e, true, nil },
			wantErr: ErrInvalidEvent},
		{name: "cut stream", in: "data: a\n\ndata: b\n",
			fn:   func(e Event) (Event, bool, error) { return e, true, nil },
			want: "data: a\n\n", wantErr: io.ErrUnexpectedEOF},
		{name: "non-JSON data fails closed", in: "data: \u00a0{}\n\n",
			fn: hideDelete, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := Transform(rec, strings.NewReader(tt.in), 0, tt.fn)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := rec.Body.String(); got != tt.want {
				t.Fatalf("wrote\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestTransformStreams checks that Transform writes each event before it
// reads the next, so a long-lived stream is not buffered.
func TestTransformStreams(t *testing.T) {
	pr, pw := io.Pipe()
	out := make(chan string, 1)
	dst := writerFunc(func(p []byte) (int, error) { out <- string(p); return len(p), nil })
	done := make(chan error, 1)
	go func() {
		done <- Transform(dst, pr, 0, func(e Event) (Event, bool, error) { return e, true, nil })
	}()
	for _, d := range []string{"1", "2"} {
		if _, err := io.WriteString(pw, "data: "+d+"\n\n"); err != nil {
			t.Fatal(err)
		}
		if got := <-out; got != "data: "+d+"\n\n" {
			t.Fatalf("got %q", got)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// FuzzRoundTrip checks that any event the Writer accepts reads back
// identically.
func FuzzRoundTrip(f *testing.F) {
	f.Add("", "", `{"jsonrpc":"2.0","id":1}`, "")
	f.Add("message", "s_1", "a\n\nb\n", "100")
	f.Add("x", "", " lead", "")
	f.Add("", "id", "", "0")
	f.Add("a b", "é", "\t\x00", "")
	f.Fuzz(func(t *testing.T, typ, id, data, retry string) {
		ev := Event{Type: typ, ID: id, Data: data, Retry: retry}
		var b bytes.Buffer
		if err := NewWriter(&b).WriteEvent(ev); err != nil {
			if ev.Validate() == nil {
				t.Fatalf("WriteEvent failed but Validate passed: %v", err)
			}
			return
		}
		r := NewReader(&b, 0)
		got, err := r.Next()
		if err != nil || got != ev {
			t.Fatalf("read back %#v, %v; wrote %#v", got, err, ev)
		}
		if _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the event: %v, want EOF", err)
		}
	})
}

// FuzzReader checks that arbitrary input never panics, that every event
// read is valid, and that re-writing what was read is a fixed point.
func FuzzReader(f *testing.F) {
	f.Add([]byte(toolsList), 0)
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n"), 16)
	f.Add([]byte("event:x\nid:\x00\n\n"), 0)
	f.Add([]byte("\uFEFF: c\n\n"), 4)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		max = max%4096 + 1
		if max <= 0 {
			max += 4096
		}
		r := NewReader(bytes.NewReader(in), max)
		var out bytes.Buffer
		w := NewWriter(&out)
		var evs []Event
		for range len(in) + 1 { // each event takes at least one byte
			ev, err := r.Next()
			if err != nil {
				break
			}
			if err := w.WriteEvent(ev); err != nil {
				t.Fatalf("read an event the writer refuses: %#v: %v", ev, err)
			}
			evs = append(evs, ev)
		}
		again, err := readAll(t, out.String(), 0)
		if err != nil || len(again) != len(evs) {
			t.Fatalf("re-read %d events, %v; want %d", len(again), err, len(evs))
		}
		for i := range evs {
			if again[i] != evs[i] {
				t.Fatalf("event %d: %#v != %#v", i, again[i], evs[i])
			}
		}
	})
}
