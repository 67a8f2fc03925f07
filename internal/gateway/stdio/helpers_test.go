package stdio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

// childMode, in a child's environment, makes the test binary an MCP server
// instead of running tests. The bridge passes it because it is in
// Config.Env, not because the child inherits anything.
const childMode = "BULKHEAD_STDIO_TEST_CHILD"

func TestMain(m *testing.M) {
	// The sandboxed benchmark's servers start as this binary again.
	sandbox.MaybeInit()
	switch os.Getenv(childMode) {
	case "":
		os.Exit(m.Run())
	case "sdk":
		runSDKServer()
	case "echo":
		runEchoServer(true)
	case "strict": // echo without the test methods, for fuzzing
		runEchoServer(false)
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(2)
	}
	os.Exit(0)
}

type (
	textIn struct {
		Text string `json:"text,omitempty"`
	}
	nameIn struct {
		Name string `json:"name"`
	}
	countIn struct {
		Count int `json:"count,omitempty"`
		MS    int `json:"ms,omitempty"`
	}
)

func textResult(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// runSDKServer is an ordinary MCP server on the official SDK.
func runSDKServer() {
	s := mcp.NewServer(&mcp.Implementation{Name: "sdk-test-server", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
			return textResult(in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "pid", Description: "returns the server's pid"},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return textResult(strconv.Itoa(os.Getpid())), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "getenv", Description: "reports whether an environment variable is set"},
		func(_ context.Context, _ *mcp.CallToolRequest, in nameIn) (*mcp.CallToolResult, any, error) {
			if _, ok := os.LookupEnv(in.Name); ok {
				return textResult("set"), nil, nil
			}
			return textResult("unset"), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "notify", Description: "sends progress and log notifications"},
		func(ctx context.Context, req *mcp.CallToolRequest, in countIn) (*mcp.CallToolResult, any, error) {
			for i := range in.Count {
				if tok := req.Params.GetProgressToken(); tok != nil {
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i + 1), Total: float64(in.Count)})
				}
				_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: fmt.Sprintf("step %d", i+1)})
			}
			return textResult("done"), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "waits"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in countIn) (*mcp.CallToolResult, any, error) {
			select {
			case <-time.After(time.Duration(in.MS) * time.Millisecond):
			case <-ctx.Done():
			}
			return textResult("slept"), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "crash", Description: "exits mid-call"},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			os.Exit(3)
			return nil, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "sample", Description: "asks the client's model"},
		func(ctx context.Context, req *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
				MaxTokens: 10,
				Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: in.Text}}},
			})
			if err != nil {
				return nil, nil, err
			}
			return textResult("model said: " + res.Content.(*mcp.TextContent).Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "grandchild", Description: "starts a long-lived child process"},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				return nil, nil, err
			}
			return textResult(strconv.Itoa(cmd.Process.Pid)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "stderr", Description: "writes to stderr"},
		func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
			fmt.Fprintln(os.Stderr, in.Text)
			return textResult("ok"), nil, nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
	}
}

// runEchoServer is a minimal hand-driven server that checks every line it
// reads: a line that is not one JSON-RPC object is reported on stderr as a
// PROTOCOL VIOLATION and the server exits. Each line read is echoed to
// stderr ("got ...") so tests can see exactly what reached the process.
// With special, methods named below make it misbehave on purpose.
func runEchoServer(special bool) {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	write := func(v any) {
		b, _ := json.Marshal(v)
		out.Write(append(b, '\n'))
		out.Flush()
	}
	for in.Scan() {
		line := in.Bytes()
		var m map[string]json.RawMessage
		if !json.Valid(line) || json.Unmarshal(line, &m) != nil || string(m["jsonrpc"]) != `"2.0"` {
			fmt.Fprintf(os.Stderr, "PROTOCOL VIOLATION: %.300q\n", line)
			os.Exit(3)
		}
		fmt.Fprintf(os.Stderr, "got %.300s\n", line)
		id, hasID := m["id"]
		var method string
		_ = json.Unmarshal(m["method"], &method)
		if !hasID || method == "" {
			continue
		}
		reply := func(result any) { write(map[string]any{"jsonrpc": "2.0", "id": id, "result": result}) }
		var params struct {
			N int `json:"n"`
		}
		_ = json.Unmarshal(m["params"], &params)
		if !special {
			method = "default"
		}
		switch method {
		case "initialize":
			reply(map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
				"serverInfo": map[string]any{"name": "echo", "version": "1"}})
		case "big":
			reply(map[string]any{"blob": strings.Repeat("x", params.N)})
		case "exit":
			os.Exit(0)
		case "stall": // stop reading stdin, and refuse to be terminated
			signal.Ignore(syscall.SIGTERM)
			time.Sleep(time.Hour)
		case "ask":
			write(map[string]any{"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage", "params": map[string]any{}})
			reply(map[string]any{})
		case "notify":
			for i := range params.N {
				write(map[string]any{"jsonrpc": "2.0", "method": "notifications/message", "params": map[string]any{"data": i}})
			}
			reply(map[string]any{})
		case "noise":
			out.WriteString("this is not JSON\n")
			reply(map[string]any{})
		case "default":
			reply(map[string]any{})
		default:
			reply(map[string]any{"method": method})
		}
	}
}

// syncBuffer collects log output from many goroutines, keeping the last
// max bytes if max is set.
type syncBuffer struct {
	mu  sync.Mutex
	b   bytes.Buffer
	max int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max > 0 && s.b.Len()+len(p) > s.max {
		keep := s.b.Bytes()[min(s.b.Len(), s.b.Len()+len(p)-s.max/2):]
		s.b = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	b    *Bridge
	srv  *httptest.Server
	logs *syncBuffer
}

// newHarness serves a Bridge over the test binary in child mode mode.
func newHarness(t testing.TB, mode string, edit func(*Config)) *harness {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := Config{
		Command: []string{exe},
		// Race-enabled binaries otherwise sleep 1s at exit.
		Env:           []string{childMode + "=" + mode, "GORACE=atexit_sleep_ms=0"},
		Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ShutdownGrace: 500 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{b: b, srv: httptest.NewServer(b), logs: logs}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		h.srv.Close()
		checkNoLeaks(t)
		if t.Failed() {
			t.Logf("bridge log:\n%s", logs.String())
		}
	})
	return h
}

// checkNoLeaks fails if a goroutine of this package or a child process
// outlives the bridge.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	var stacks string
	for range 100 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		leaked := false
		for g := range strings.SplitSeq(stacks, "\n\n") {
			if strings.Contains(g, "gateway/stdio.(*session)") || strings.Contains(g, "gateway/stdio.(*Bridge)") {
				leaked = true
			}
		}
		if !leaked && len(childPIDs(t)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("leaked: children %v; goroutines:\n%s", childPIDs(t), stacks)
}

// childPIDs lists this process's children, zombies included.
func childPIDs(t testing.TB) []int {
	t.Helper()
	entries, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	var pids []int
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue // exited meanwhile
		}
		// The command name may hold spaces; the fields after it do not.
		_, rest, ok := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == me {
			pid, _ := strconv.Atoi(strings.Split(e, "/")[2])
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// waitGone waits (bounded) for pid to be gone.
func waitGone(t testing.TB, pid int) {
	t.Helper()
	for range 200 {
		if !alive(pid) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("process %d still alive", pid)
}

// waitFor polls cond (bounded).
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// connect runs the official SDK client against the bridge.
func (h *harness) connect(t testing.TB, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, opts)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   h.srv.URL,
		HTTPClient: h.srv.Client(),
		MaxRetries: -1, // no reconnects: a test must not wait on backoff
	}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// callText calls a tool and returns its text.
func callText(t testing.TB, cs *mcp.ClientSession, name string, args any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("call %s: %+v", name, res)
	}
	return res.Content[0].(*mcp.TextContent).Text
}

// post sends one raw POST.
func (h *harness) post(t testing.TB, session, body string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set(sessionHeader, session)
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

const initBody = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// initRaw starts a session by hand and returns its id.
func (h *harness) initRaw(t testing.TB) string {
	t.Helper()
	resp, body := h.post(t, "", initBody, nil)
	sid := resp.Header.Get(sessionHeader)
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %s", resp.StatusCode, body)
	}
	return sid
}

// rpcErrorCode returns the JSON-RPC error code of a response body, or 0.
func rpcErrorCode(body []byte) int64 {
	var r struct {
		Error *struct {
			Code int64 `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &r) != nil || r.Error == nil {
		return 0
	}
	return r.Error.Code
}
