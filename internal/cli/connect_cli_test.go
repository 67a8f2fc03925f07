package cli_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/cli"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

func TestConnectFlagErrors(t *testing.T) {
	empty := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"nothing", []string{"connect"}, "--dir and --gateway are required"},
		{"no gateway", []string{"connect", "--dir", empty}, "--dir and --gateway are required"},
		{"no dir", []string{"connect", "--gateway", "https://gw.test"}, "--dir and --gateway are required"},
		{"plain http gateway", []string{"connect", "--dir", empty, "--gateway", "http://gw.test"}, "must use https"},
		{"all interfaces", []string{"connect", "--dir", empty, "--gateway", "https://gw.test", "--listen", "0.0.0.0:7070"}, `refusing to listen on "0.0.0.0:7070"`},
		{"no host", []string{"connect", "--dir", empty, "--gateway", "https://gw.test", "--listen", ":7070"}, "refusing to listen"},
		{"LAN address", []string{"connect", "--dir", empty, "--gateway", "https://gw.test", "--listen", "192.168.1.10:7070"}, "serves only on loopback"},
		{"bad address", []string{"connect", "--dir", empty, "--gateway", "https://gw.test", "--listen", "7070"}, "listen address"},
		{"no credentials", []string{"connect", "--dir", empty, "--gateway", "https://gw.test"}, "agent credentials in " + empty},
		{"not a task id", []string{"connect", "--dir", empty, "--gateway", "https://gw.test", "--task", "report-writer"}, `"report-writer" is not a task id`},
		{"arguments", []string{"connect", "extra"}, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := run(t, nil, c.args...)
			if code == 0 || !strings.Contains(errs, c.want) {
				t.Fatalf("bulkhead %v: exit %d, stderr %q, want %q", c.args, code, errs, c.want)
			}
		})
	}
}

// The command end to end: ready line, an MCP call through it, a clean stop.
func TestConnectCommand(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	env := map[string]string{"BULKHEAD_SERVER": e.URL}

	// The default resource is the gateway's URL, which is not this
	// gateway's resource: refused at start, with the fix in the message.
	code, _, errs := run(t, env, "connect", "--dir", dir, "--gateway", e.GatewayURL, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errs, "cannot obtain an access token for "+e.GatewayURL) {
		t.Fatalf("connect with the default resource: exit %d %s", code, errs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, []string{"connect", "--dir", dir, "--gateway", e.GatewayURL, "--resource", gatewaytest.Resource,
			"--listen", "127.0.0.1:0", "--scope", "mcp"}, &strings.Builder{}, stderr, func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		})
	}()
	ready := regexp.MustCompile(`spiffe://bulkhead.local/agent/alpha ready at (http://127\.0\.0\.1:\d+) `)
	var url string
	for deadline := time.Now().Add(15 * time.Second); url == ""; {
		if m := ready.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("connect exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect not ready: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(stderr.String(), "\n"); n != 1 {
		t.Fatalf("connect printed %d lines when ready, want 1: %s", n, stderr.String())
	}
	cs := gatewaytest.Connect(t, url+"/mcp/files", &http.Client{})
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/x"}})
	if err != nil || gatewaytest.Text(res) != "contents of /srv/x" {
		t.Fatalf("read_file through connect: %v %+v", err, res)
	}
	cs.Close()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("connect exited %d on shutdown: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not stop")
	}
}
