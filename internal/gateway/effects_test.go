package gateway_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

const (
	readCall  = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/secret-plans.md"}}}`
	writeCall = `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"/srv/a","content":"x"}}}`
)

var errDiskGone = errors.New("disk gone")

// A tool the operator declares read-only is forwarded while its decision
// record is written, and its answer is released only once the record is
// durable. When the record fails, the agent never sees what the tool
// returned: an unrecorded read happened for no one.
func TestReadOnlyCallIsAnsweredOnlyOnceRecorded(t *testing.T) {
	h := startGateway(t, &decider{readOnly: map[string]bool{"read_file": true}})
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)

	t.Run("recorded: the answer arrives", func(t *testing.T) {
		status, body, _, err := h.mcpPost(hc, sid, readCall)
		if err != nil || status != http.StatusOK || !strings.Contains(body, "contents of /srv/secret-plans.md") {
			t.Fatalf("read: %d %s %v", status, body, err)
		}
		if !slices.Contains(h.Rec.actions(), "gateway.call_tool:allow") {
			t.Fatalf("records %v", h.Rec.actions())
		}
	})

	t.Run("not recorded: the answer is withheld", func(t *testing.T) {
		hold := make(chan struct{})
		h.Rec.set(errDiskGone, hold, nil)
		defer h.Rec.set(nil, nil, nil)
		before := h.Files.Calls.Load()
		type answer struct {
			status int
			body   string
			err    error
		}
		got := make(chan answer, 1)
		go func() {
			status, body, _, err := h.mcpPost(hc, sid, readCall)
			got <- answer{status, body, err}
		}()
		// The call reaches the tool while its record is still being
		// written: that is the latency saved.
		testenv.Await(t, 10*time.Second, "the read forwarded before its record is durable", func() bool { return h.Files.Calls.Load() > before })
		close(hold)
		a := <-got
		if a.err != nil {
			t.Fatal(a.err)
		}
		if strings.Contains(a.body, "contents of") || a.status != http.StatusServiceUnavailable {
			t.Fatalf("an unrecorded read reached the agent: %d %s", a.status, a.body)
		}
	})
}

// A tool with effects (the default) is never forwarded unless its record
// is durable.
func TestWriteIsForwardedOnlyOnceRecorded(t *testing.T) {
	h := startGateway(t, &decider{readOnly: map[string]bool{"read_file": true}})
	hc := h.agent(t, "alpha")
	sid := h.session(t, hc)
	h.Rec.set(errDiskGone, nil, nil)
	before := h.Files.Calls.Load()
	status, body, _, err := h.mcpPost(hc, sid, writeCall)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusServiceUnavailable || strings.Contains(body, "wrote") {
		t.Fatalf("write without a record: %d %s", status, body)
	}
	if n := h.Files.Calls.Load(); n != before {
		t.Fatalf("the tool ran %d time(s) without a record", n-before)
	}
	h.Rec.set(nil, nil, nil)
	if status, body, _, err := h.mcpPost(hc, sid, writeCall); err != nil || !strings.Contains(body, "wrote 1 bytes") {
		t.Fatalf("write once the log is back: %d %s %v", status, body, err)
	}
}
