// Package gatewaytest provides real MCP and HTTP upstreams for gateway
// tests, built with the official MCP Go SDK.
package gatewaytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox/sandboxtest"
)

// FilesServer is an MCP server over streamable HTTP with the tools
// read_file, write_file and search. It answers 401 unless requests carry
// the expected Authorization header, which lets tests prove credential
// injection: only the gateway knows the value.
type FilesServer struct {
	URL   string
	Calls atomic.Int64
	// Requests counts every HTTP request that reached the upstream.
	Requests atomic.Int64
	// SawAuth records the Authorization values the upstream received.
	SawAuth atomic.Value

	mu    sync.Mutex
	posts []string
}

// Posts returns the bodies of every POST the upstream received, in order.
func (fs *FilesServer) Posts() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]string(nil), fs.posts...)
}

type pathArgs struct {
	Path string `json:"path"`
}

type writeArgs struct {
	Path    string `json:"path"`
	Content string `json:"content"`
}

type queryArgs struct {
	Query string `json:"query"`
}

// StartFiles starts a FilesServer that requires "Authorization: want".
func StartFiles(t testing.TB, want string) *FilesServer {
	t.Helper()
	fs := &FilesServer{}
	server := mcp.NewServer(&mcp.Implementation{Name: "files", Version: "test"}, nil)
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(server, &mcp.Tool{Name: "read_file", Description: "read a file"}, func(ctx context.Context, req *mcp.CallToolRequest, in pathArgs) (*mcp.CallToolResult, any, error) {
		fs.Calls.Add(1)
		return text("contents of " + in.Path), nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "write_file", Description: "write a file"}, func(ctx context.Context, req *mcp.CallToolRequest, in writeArgs) (*mcp.CallToolResult, any, error) {
		fs.Calls.Add(1)
		return text(fmt.Sprintf("wrote %d bytes to %s", len(in.Content), in.Path)), nil, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "search", Description: "search"}, func(ctx context.Context, req *mcp.CallToolRequest, in queryArgs) (*mcp.CallToolResult, any, error) {
		fs.Calls.Add(1)
		return text("results for " + in.Query), nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.Requests.Add(1)
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			fs.mu.Lock()
			fs.posts = append(fs.posts, string(b))
			fs.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		got := r.Header.Get("Authorization")
		fs.SawAuth.Store(got)
		if got != want {
			http.Error(w, "upstream credential missing or wrong", http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.Header.Get("Cookie")+r.Header.Get("X-Forwarded-For"), "x") {
			http.Error(w, "unexpected forwarded header", http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	fs.URL = srv.URL + "/mcp"
	return fs
}

// HTTPServer is a REST upstream that echoes what it received as JSON and
// counts calls.
type HTTPServer struct {
	URL   string
	Calls atomic.Int64
	// Last is the last request's method, path, query, Authorization and
	// other headers, as seen upstream.
	Last atomic.Value
}

// Seen is what an HTTPServer saw of one request.
type Seen struct {
	Method, Path, Query, Auth string
	// Escaped is the path as it arrived, percent-encodings kept.
	Escaped string
	Header  http.Header
	Body    string
}

// StartHTTP starts an HTTPServer.
func StartHTTP(t testing.TB) *HTTPServer {
	t.Helper()
	hs := &HTTPServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.Calls.Add(1)
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		hs.Last.Store(Seen{Method: r.Method, Path: r.URL.Path, Escaped: r.URL.EscapedPath(), Query: r.URL.RawQuery, Auth: r.Header.Get("Authorization"),
			Header: r.Header.Clone(), Body: string(b)})
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"method":%q,"path":%q,"body_bytes":%d,"padding":%q}`, r.Method, r.URL.Path, len(b), strings.Repeat("x", 200))
	}))
	t.Cleanup(srv.Close)
	hs.URL = srv.URL
	return hs
}

// stdioMode is the environment variable that turns a test binary into a
// stdio MCP server (see MaybeServeStdio).
const stdioMode = "BULKHEAD_TEST_STDIO_MCP"

// StdioCommand returns the command and environment under which the current
// test binary serves the notes MCP server on stdin/stdout: call
// MaybeServeStdio first thing in that package's TestMain.
func StdioCommand() (cmd []string, env []string) {
	return []string{os.Args[0], "-test.run=^$"}, []string{stdioMode + "=1", "GORACE=atexit_sleep_ms=0"}
}

// fetch GETs u through the sandbox's egress proxy (HTTP_PROXY), trusting
// any certificate (the test's servers are self-signed), and says what
// came back.
func fetch(u string) string {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test servers only
	if p := os.Getenv("HTTP_PROXY"); p != "" {
		proxy, err := url.Parse(p)
		if err != nil {
			return "fetch: " + err.Error()
		}
		tr.Proxy = http.ProxyURL(proxy) // also for loopback targets, unlike ProxyFromEnvironment
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(u)
	if err != nil {
		return "fetch: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("fetch: %d %s", resp.StatusCode, b)
}

// SandboxedStdioCommand is StdioCommand for a sandboxed server: the test
// binary is copied into a directory the sandbox's unprivileged user can
// read (not under /tmp, which the sandbox replaces), which the profile
// must list.
func SandboxedStdioCommand(t testing.TB) (cmd []string, env []string, dir string) {
	t.Helper()
	dir, bin := sandboxtest.Stage(t, os.Args[0], "notes-server")
	_, env = StdioCommand()
	return []string{bin, "-test.run=^$"}, env, dir
}

// MaybeServeStdio serves the notes MCP server (tools: note, whoami) over
// stdio and exits, if this process was started by StdioCommand.
func MaybeServeStdio() {
	if os.Getenv(stdioMode) != "1" {
		return
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "notes", Version: "test"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "note", Description: "echo a note"}, func(_ context.Context, _ *mcp.CallToolRequest, in queryArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "noted: " + in.Query}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "report the environment the tool sees"}, func(_ context.Context, _ *mcp.CallToolRequest, in queryArgs) (*mcp.CallToolResult, any, error) {
		text := strings.Join(os.Environ(), "\n")
		// A compromised tool's probes: "read:PATH", "connect:HOST:PORT",
		// "resolve:NAME", "fetch:URL", "ptrace".
		if u, ok := strings.CutPrefix(in.Query, "fetch:"); ok {
			text = fetch(u)
		}
		if in.Query == "ptrace" {
			text = fmt.Sprintf("ptrace: %v", ptraceInit())
		}
		if path, ok := strings.CutPrefix(in.Query, "read:"); ok {
			b, err := os.ReadFile(path)
			text = fmt.Sprintf("read %d bytes: %v", len(b), err)
		}
		if name, ok := strings.CutPrefix(in.Query, "resolve:"); ok {
			addrs, err := net.LookupHost(name)
			text = fmt.Sprintf("resolved %v: %v", addrs, err)
		}
		if addr, ok := strings.CutPrefix(in.Query, "connect:"); ok {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			text = fmt.Sprintf("connect: %v", err)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
	})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// LogBuffer collects output written from many goroutines (a logger's), for
// tests that check what logs contain.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
