package stdio

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// TestSDKClientAndServer runs the official SDK on both sides of the bridge.
func TestSDKClientAndServer(t *testing.T) {
	t.Setenv("BULKHEAD_TEST_SECRET", "hunter2") // in the gateway, never in a tool

	var (
		mu       sync.Mutex
		progress []float64
		logged   []string
	)
	h := newHarness(t, "sdk", func(c *Config) { c.Env = append(c.Env, "ALLOWED=yes") })
	cs := h.connect(t, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, r.Params.Progress)
			mu.Unlock()
		},
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			mu.Lock()
			logged = append(logged, r.Params.Data.(string))
			mu.Unlock()
		},
		CreateMessageHandler: func(_ context.Context, r *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			q := r.Params.Messages[0].Content.(*mcp.TextContent).Text
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: strings.ToUpper(q)}}, nil
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if got := cs.InitializeResult().ServerInfo.Name; got != "sdk-test-server" {
		t.Errorf("server name = %q", got)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	for _, want := range []string{"echo", "pid", "getenv", "notify", "sample"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools/list lacks %q: %v", want, names)
		}
	}

	t.Run("call", func(t *testing.T) {
		if got := callText(t, cs, "echo", map[string]any{"text": "hi\nthere"}); got != "hi\nthere" {
			t.Errorf("echo = %q", got)
		}
	})

	t.Run("environment is explicit", func(t *testing.T) {
		for name, want := range map[string]string{"BULKHEAD_TEST_SECRET": "unset", "HOME": "unset", "ALLOWED": "set", "PATH": "set"} {
			if got := callText(t, cs, "getenv", map[string]any{"name": name}); got != want {
				t.Errorf("%s is %s in the tool, want %s", name, got, want)
			}
		}
	})

	t.Run("notifications reach the GET stream", func(t *testing.T) {
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
			t.Fatal(err)
		}
		params := &mcp.CallToolParams{Name: "notify", Arguments: map[string]any{"count": 3}}
		params.SetProgressToken("tok")
		if _, err := cs.CallTool(ctx, params); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "3 progress and 3 log notifications", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(progress) == 3 && len(logged) == 3
		})
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(progress, []float64{1, 2, 3}) || !slices.Equal(logged, []string{"step 1", "step 2", "step 3"}) {
			t.Errorf("progress %v, logs %v", progress, logged)
		}
	})

	t.Run("server requests round-trip", func(t *testing.T) {
		if got := callText(t, cs, "sample", map[string]any{"text": "ping"}); got != "model said: PING" {
			t.Errorf("sample = %q", got)
		}
	})

	t.Run("stderr is logged with the session", func(t *testing.T) {
		callText(t, cs, "stderr", map[string]any{"text": "marker-42"})
		waitUntil(t, "stderr in the log", func() bool {
			return strings.Contains(h.logs.String(), "session="+cs.ID()) && strings.Contains(h.logs.String(), "line=marker-42")
		})
	})

	t.Run("cancelled call keeps the session", func(t *testing.T) {
		pid := callText(t, cs, "pid", nil)
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := cs.CallTool(short, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"ms": 5000}}); err == nil {
			t.Fatal("slow call succeeded within 100ms")
		}
		if got := callText(t, cs, "pid", nil); got != pid {
			t.Errorf("pid after cancel = %s, want %s", got, pid)
		}
		if got := callText(t, cs, "echo", map[string]any{"text": "still here"}); got != "still here" {
			t.Errorf("echo = %q", got)
		}
	})
}

func TestSessionPerProcess(t *testing.T) {
	var (
		mu    sync.Mutex
		ended = map[string]error{}
	)
	h := newHarness(t, "sdk", func(c *Config) {
		c.OnSessionEnd = func(id string, reason error) {
			mu.Lock()
			ended[id] = reason
			mu.Unlock()
		}
	})
	a, b := h.connect(t, nil), h.connect(t, nil)
	pidA, _ := strconv.Atoi(callText(t, a, "pid", nil))
	pidB, _ := strconv.Atoi(callText(t, b, "pid", nil))
	if pidA == pidB || pidA == 0 {
		t.Fatalf("sessions share process %d", pidA)
	}
	if a.ID() == b.ID() || len(a.ID()) < 20 {
		t.Fatalf("session ids %q and %q", a.ID(), b.ID())
	}
	if n := h.b.Sessions(); n != 2 {
		t.Fatalf("Sessions() = %d, want 2", n)
	}

	// Closing a client sends DELETE, which kills its process only.
	idA := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pidA)
	if !alive(pidB) {
		t.Fatal("the other session's process died")
	}
	if got := callText(t, b, "pid", nil); got != strconv.Itoa(pidB) {
		t.Errorf("other session answers from pid %s", got)
	}
	waitUntil(t, "OnSessionEnd", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ended[idA] != nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !errors.Is(ended[idA], ErrSessionClosed) {
		t.Errorf("end reason = %v, want ErrSessionClosed", ended[idA])
	}
	if h.b.Sessions() != 1 {
		t.Errorf("Sessions() = %d, want 1", h.b.Sessions())
	}
}

func TestProcessCrashEndsSession(t *testing.T) {
	reasons := make(chan error, 1)
	h := newHarness(t, "sdk", func(c *Config) {
		c.OnSessionEnd = func(_ string, reason error) { reasons <- reason }
	})
	cs := h.connect(t, nil)
	pid, _ := strconv.Atoi(callText(t, cs, "pid", nil))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The client sees either the call's 502 or its event stream ending
	// first; both are the session ending.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "crash"}); err == nil {
		t.Fatal("crash call succeeded")
	}
	waitGone(t, pid)
	if reason := <-reasons; !errors.Is(reason, ErrUpstream) {
		t.Errorf("end reason = %v, want ErrUpstream", reason)
	}
	if n := h.b.Sessions(); n != 0 {
		t.Errorf("Sessions() = %d after crash", n)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "pid"}); err == nil {
		t.Error("call on a crashed session succeeded")
	}
}

func TestDescendantsAreKilled(t *testing.T) {
	h := newHarness(t, "sdk", nil)
	cs := h.connect(t, nil)
	pid, _ := strconv.Atoi(callText(t, cs, "pid", nil))
	grandchild, _ := strconv.Atoi(callText(t, cs, "grandchild", nil))
	if !alive(grandchild) {
		t.Fatal("grandchild not running")
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	waitGone(t, grandchild)
}

func TestIdleSessionsAreReaped(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := newHarness(t, "sdk", func(c *Config) {
		c.Clock = clk
		c.SessionIdleTimeout = time.Minute
	})
	cs := h.connect(t, nil)
	pid, _ := strconv.Atoi(callText(t, cs, "pid", nil))

	waitUntil(t, "the reaper to wait", func() bool { return clk.Waiters() > 0 })
	clk.Advance(30 * time.Second) // not idle long enough
	waitUntil(t, "the reaper to wait again", func() bool { return clk.Waiters() > 0 })
	if h.b.Sessions() != 1 {
		t.Fatal("session reaped before its idle timeout")
	}
	clk.Advance(45 * time.Second)
	waitUntil(t, "the session to be reaped", func() bool { return h.b.Sessions() == 0 })
	waitGone(t, pid)
}

func TestMaxSessions(t *testing.T) {
	h := newHarness(t, "sdk", func(c *Config) { c.MaxSessions = 1 })
	first := h.connect(t, nil)
	resp, body := h.post(t, "", initBody, nil)
	if resp.StatusCode != 503 || rpcErrorCode(body) != CodeBusy || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second session: %d %s", resp.StatusCode, body)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the slot to free", func() bool { return h.b.Sessions() == 0 })
	h.connect(t, nil)
}

func TestCloseKillsEverything(t *testing.T) {
	h := newHarness(t, "sdk", nil)
	var pids []int
	for range 3 {
		pid, _ := strconv.Atoi(callText(t, h.connect(t, nil), "pid", nil))
		pids = append(pids, pid)
	}
	if err := h.b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d alive after Close", pid)
		}
	}
	if resp, body := h.post(t, "", initBody, nil); resp.StatusCode != 503 {
		t.Errorf("initialize after Close: %d %s", resp.StatusCode, body)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no command", Config{}, "command is required"},
		{"empty program", Config{Command: []string{""}}, "command is required"},
		{"env not KEY=VALUE", Config{Command: []string{"sh"}, Env: []string{"FOO"}}, "not KEY=VALUE"},
		{"env empty key", Config{Command: []string{"sh"}, Env: []string{"=x"}}, "not KEY=VALUE"},
		{"env NUL", Config{Command: []string{"sh"}, Env: []string{"A=b\x00c"}}, "not KEY=VALUE"},
		{"env twice", Config{Command: []string{"sh"}, Env: []string{"A=1", "A=2"}}, `sets "A" twice`},
		{"not in the program's PATH", Config{Command: []string{"sh"}, Env: []string{"PATH=/nonexistent"}}, "not found in PATH"},
		{"relative PATH entries are skipped", Config{Command: []string{"sh"}, Env: []string{"PATH=bin:."}, Dir: "/"}, "not found in PATH"},
		{"not executable", Config{Command: []string{plain}}, "not an executable file"},
		{"dir missing", Config{Command: []string{"sh"}, Dir: "/nonexistent"}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.cfg)
			if err == nil {
				b.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "stdio: ") {
				t.Fatalf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestBuildEnv(t *testing.T) {
	tests := []struct {
		name     string
		in, want []string
	}{
		{"nil still means empty, not inherited", nil, []string{"PATH=" + DefaultPath}},
		{"kept in order", []string{"B=2", "A=1"}, []string{"B=2", "A=1", "PATH=" + DefaultPath}},
		{"own PATH", []string{"PATH=/opt/bin"}, []string{"PATH=/opt/bin"}},
		{"values may hold =", []string{"K=a=b"}, []string{"K=a=b", "PATH=" + DefaultPath}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := buildEnv(tt.in)
			if err != nil || got == nil || !slices.Equal(got, tt.want) {
				t.Fatalf("buildEnv = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
