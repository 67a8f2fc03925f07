package sse_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
)

// A gateway rewriting an MCP response stream: each event is seen, and
// possibly changed or dropped, before the agent gets it.
func ExampleTransform() {
	upstream := strings.NewReader("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n" +
		": keepalive\n\n" +
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n")
	err := sse.Transform(os.Stdout, upstream, 1<<20, func(ev sse.Event) (sse.Event, bool, error) {
		if strings.Contains(ev.Data, "notifications/progress") {
			return ev, false, nil // drop
		}
		ev.ID = "gw-1"
		return ev, true, nil
	})
	fmt.Println("err:", err)
	// Output:
	// event: message
	// id: gw-1
	// data: {"jsonrpc":"2.0","id":1,"result":{}}
	//
	// err: <nil>
}
