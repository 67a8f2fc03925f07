package stdio

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox/sandboxtest"
)

// BenchmarkSandboxedStdio compares a stdio MCP server (the official Go
// SDK's) run plainly and in the sandbox, side by side: a session's start
// (process start, sandbox set-up, MCP initialize) and one tools/call
// through the bridge.
func BenchmarkSandboxedStdio(b *testing.B) {
	if err := sandbox.Check().Enforce(); err != nil {
		b.Skip(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	dir, staged := sandboxtest.Stage(b, exe, "sdk-server")
	p := sandbox.Strict()
	p.Read = append(p.Read, dir)
	p.Env = []string{childMode + "=sdk", "GORACE=atexit_sleep_ms=0"}
	confined := func(c *Config) {
		c.Command = []string{staged}
		c.Confine = func(cmd *exec.Cmd, _ string) (func() error, func(), error) {
			conf, err := sandbox.Wrap(cmd, p)
			if err != nil {
				return nil, nil, err
			}
			return conf.Started, conf.Close, nil
		}
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
	}{{"plain", nil}, {"sandboxed", confined}} {
		b.Run("session_start/"+c.name, func(b *testing.B) {
			h := newHarness(b, "sdk", c.edit)
			for b.Loop() {
				cs := h.connect(b, nil)
				_ = cs.Close()
			}
		})
		b.Run("tools_call/"+c.name, func(b *testing.B) {
			h := newHarness(b, "sdk", c.edit)
			cs := h.connect(b, nil)
			ctx := context.Background()
			for b.Loop() {
				if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
