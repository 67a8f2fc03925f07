package elevation_test

import (
	"errors"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// FuzzParseElevationRequest: what a manipulated agent sends as an
// elevation request never panics the parser, and whatever it accepts is
// a well-formed request.
func FuzzParseElevationRequest(f *testing.F) {
	f.Add([]byte(`{"task":"tk_0123456789abcdef01234567","trigger":"write-report","justification":"weekly"}`))
	f.Add([]byte(`{"task":"tk_0123456789abcdef01234567","trigger":"write-report","justification":"x","approve":true}`))
	f.Add([]byte(`{"task":"tk_x","trigger":"../../etc","justification":""}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[`))
	f.Add([]byte(`{"task":"tk_0123456789abcdef01234567","trigger":"a","justification":"b"}{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := elevation.ParseElevationRequest(b)
		if err != nil {
			if !errors.Is(err, fault.Invalid) && !errors.Is(err, fault.TooLarge) {
				t.Fatalf("error of another kind: %v", err)
			}
			return
		}
		if elevation.ValidateTaskID(req.Task) != nil || elevation.ValidateName("trigger", req.Trigger) != nil || req.Justification == "" {
			t.Fatalf("accepted a malformed request: %+v", req)
		}
	})
}

func TestParseElevationRequest(t *testing.T) {
	for _, c := range []struct {
		name, body string
		kind       error
	}{
		{"ok", `{"task":"tk_0123456789abcdef01234567","trigger":"write-report","justification":"weekly"}`, nil},
		{"unknown field", `{"task":"tk_0123456789abcdef01234567","trigger":"w","justification":"j","status":"active"}`, fault.Invalid},
		{"two values", `{"task":"tk_0123456789abcdef01234567","trigger":"w","justification":"j"} {}`, fault.Invalid},
		{"bad task", `{"task":"el_0123456789abcdef01234567","trigger":"w","justification":"j"}`, fault.Invalid},
		{"bad trigger", `{"task":"tk_0123456789abcdef01234567","trigger":"W/X","justification":"j"}`, fault.Invalid},
		{"deep", `{"task":[[[[[[[[[[[[]]]]]]]]]]]]}`, fault.Invalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := elevation.ParseElevationRequest([]byte(c.body))
			if (c.kind == nil) != (err == nil) || c.kind != nil && !errors.Is(err, c.kind) {
				t.Fatalf("got %v, want %v", err, c.kind)
			}
		})
	}
}
