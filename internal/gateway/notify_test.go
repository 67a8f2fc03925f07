package gateway

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// readmeOnly allows reading docs://readme and nothing else.
type readmeOnly struct{}

func (readmeOnly) Decide(_ context.Context, d Decision) (policy.Decision, error) {
	in, _ := strictjson.Parse(d.Input, strictjson.Limits{})
	uri, _ := in.Get("uri").Str()
	return policy.Decision{ID: "d", Allowed: d.Action == policy.ActionReadResource && uri == "docs://readme"}, nil
}

func notifyGateway(t *testing.T) (*Gateway, *caller, *caller) {
	clk := clock.NewFake(time.Unix(0, 0))
	g := &Gateway{cfg: &Config{Name: "gw"}, mcp: newMCPState(clk), logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		deps: Deps{Decider: readmeOnly{}, Clock: clk}}
	agent := func(name string) *caller {
		return &caller{id: spiffeid.RequireFromString("spiffe://td/agent/" + name), claims: &token.Claims{}}
	}
	return g, agent("alice"), agent("mallory")
}

func msg(t *testing.T, s string) *rpcmsg.Message {
	t.Helper()
	m, rerr := rpcmsg.Parse([]byte(s), 0)
	if rerr != nil {
		t.Fatal(rerr)
	}
	return m
}

// What an upstream pushes reaches only whom it concerns: a resource's
// update only an agent that may read it now, a task's state only its
// creator; on a listen stream nothing the spec does not put there.
func TestNotificationVisible(t *testing.T) {
	g, alice, mallory := notifyGateway(t)
	s := &Server{Name: "docs"}
	g.mcp.bindTask("docs", "t1", alice.id.String(), "")
	listen := &exchange{msg: msg(t, `{"jsonrpc":"2.0","id":"l","method":"subscriptions/listen","params":{}}`)}
	stream := &exchange{}
	for _, tt := range []struct {
		name string
		ex   *exchange
		c    *caller
		note string
		want bool
	}{
		{"readable resource updated", listen, alice, `{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"docs://readme"}}`, true},
		{"unreadable resource updated", listen, alice, `{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"docs://secret"}}`, false},
		{"own task's state", stream, alice, `{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"t1","status":"completed"}}`, true},
		{"another's task's state", stream, mallory, `{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"t1","status":"completed"}}`, false},
		{"another's task, 2026 form", listen, mallory, `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t1","status":"completed"}}`, false},
		{"list changed", listen, mallory, `{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{}}`, true},
		{"progress on a listen stream", listen, alice, `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`, false},
		{"progress on a request's stream", &exchange{msg: msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`)}, alice,
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.notificationVisible(context.Background(), tt.c, s, tt.ex, msg(t, tt.note)); got != tt.want {
				t.Fatalf("visible = %v, want %v", got, tt.want)
			}
		})
	}
}

// tasks/list (2025-11-25) shows the caller its own tasks only; a task a
// result creates is bound to the caller that made the call.
func TestTaskResults(t *testing.T) {
	g, alice, mallory := notifyGateway(t)
	s := &Server{Name: "docs"}
	call := &exchange{msg: msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"job","task":{"ttl":1000}}}`), call: mcpCall{action: policy.ActionCallTool}}
	out, keep, ok := g.checkMessage(context.Background(), alice, s, call, []byte(`{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"a1","status":"working"}}}`))
	if !keep || !ok || string(out) != `{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"a1","status":"working"}}}` {
		t.Fatalf("task creation: %s", out)
	}
	modern := &exchange{msg: msg(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"job"}}`), rev: revision{version: revisionModern, modern: true}}
	if _, _, ok := g.checkMessage(context.Background(), mallory, s, modern, []byte(`{"jsonrpc":"2.0","id":2,"result":{"resultType":"task","taskId":"m1","status":"working"}}`)); !ok {
		t.Fatal("2026 task creation refused")
	}
	if !g.mcp.ownsTask("docs", "a1", alice.id.String(), "") || !g.mcp.ownsTask("docs", "m1", mallory.id.String(), "") || g.mcp.ownsTask("docs", "a1", mallory.id.String(), "") {
		t.Fatal("tasks bound to the wrong agents")
	}
	list := &exchange{msg: msg(t, `{"jsonrpc":"2.0","id":3,"method":"tasks/list","params":{}}`)}
	out, _, _ = g.checkMessage(context.Background(), mallory, s, list, []byte(`{"jsonrpc":"2.0","id":3,"result":{"tasks":[{"taskId":"a1"},{"taskId":"m1"},{"taskId":"zz"}]}}`))
	if string(out) != `{"jsonrpc":"2.0","id":3,"result":{"tasks":[{"taskId":"m1"}]}}` {
		t.Fatalf("tasks/list for mallory: %s", out)
	}
	// server/discover names only revisions the gateway speaks.
	disc := &exchange{msg: msg(t, `{"jsonrpc":"2.0","id":4,"method":"server/discover","params":{}}`)}
	out, _, _ = g.checkMessage(context.Background(), mallory, s, disc, []byte(`{"jsonrpc":"2.0","id":4,"result":{"supportedVersions":["2099-01-01","2026-07-28"]}}`))
	if string(out) != `{"jsonrpc":"2.0","id":4,"result":{"supportedVersions":["2026-07-28"]}}` {
		t.Fatalf("discover: %s", out)
	}
}
