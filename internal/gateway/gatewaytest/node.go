package gatewaytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Node harness in js/ runs MCP servers and clients built with the
// official TypeScript SDKs: v2 (@modelcontextprotocol/server and client
// 2.4.0, protocol revision 2026-07-28 with a 2025-11-25 fallback) and v1
// (@modelcontextprotocol/sdk 1.32.2, revision 2025-11-25). Its scripts print
// JSON lines; the helpers here start them and parse what they print.

// NodeHarness returns the directory holding server.mjs and client.mjs when
// node is on the PATH and the harness's node_modules are installed. It skips
// the test otherwise, except under CI=true, where it fails it: CI must never
// pass by skipping.
func NodeHarness(t testing.TB) (dir string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir = filepath.Join(filepath.Dir(file), "js")
	var missing string
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not on the PATH"
	} else {
		for _, pkg := range []string{"client", "server", "sdk"} {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", pkg, "package.json")); err != nil {
				missing = "its node_modules are not installed"
				break
			}
		}
	}
	if missing == "" {
		return dir
	}
	msg := fmt.Sprintf("Node MCP harness unavailable: %s (run: npm ci --prefix internal/gateway/gatewaytest/js)", missing)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; required under CI=true")
	}
	t.Skip(msg)
	return ""
}

// ServerRecord is one JSON line server.mjs printed. Kind says which fields
// are set: "request" (Method, Path, Headers, Body), "response" (Status,
// Headers), "body" (Body), "sse" (Event, ID, Data), "end" (Reason), "app"
// (what a tool did; see Line), "error" (Message). Header names are lower
// case.
type ServerRecord struct {
	Kind    string            `json:"kind"`
	Seq     int               `json:"seq"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
	Status  int               `json:"status"`
	Event   string            `json:"event"`
	ID      string            `json:"id"`
	Data    json.RawMessage   `json:"data"`
	Reason  string            `json:"reason"`
	Message string            `json:"message"`
	// Line is the whole line as printed.
	Line json.RawMessage `json:"-"`
}

// Header returns the value of the named request or response header.
func (r ServerRecord) Header(name string) string { return r.Headers[strings.ToLower(name)] }

// RPC decodes the JSON-RPC method and id of a request record's body, or of
// an SSE event's data.
func (r ServerRecord) RPC() (method string, id json.RawMessage) {
	src := r.Body
	if r.Kind == "sse" {
		src = r.Data
	}
	var m struct {
		Method string          `json:"method"`
		ID     json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(src, &m)
	return m.Method, m.ID
}

// NodeServer is a running server.mjs.
type NodeServer struct {
	// URL is the MCP endpoint, http://127.0.0.1:PORT/mcp.
	URL string
	SDK string

	stderrOf func() string

	mu      sync.Mutex
	records []ServerRecord
	changed chan struct{} // closed and replaced on every new record
}

// StartNodeServer starts server.mjs with --sdk sdk ("v2" or "v1") on a free
// loopback port, plus args (e.g. "--legacy", "reject"). The process is killed
// at t.Cleanup; its stderr is logged if the test failed.
func StartNodeServer(t testing.TB, sdk string, args ...string) *NodeServer {
	t.Helper()
	s := &NodeServer{SDK: sdk, changed: make(chan struct{})}
	argv := append([]string{"server.mjs", "--sdk", sdk}, args...)
	s.URL, s.stderrOf = startNode(t, NodeHarness(t), argv, func(line []byte) {
		if bytes.HasPrefix(line, []byte(`{"listening"`)) {
			return
		}
		var rec ServerRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			rec = ServerRecord{Kind: "unparsed", Message: string(line)}
		}
		rec.Line = line
		s.mu.Lock()
		s.records = append(s.records, rec)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	})
	return s
}

// startNode runs `node SCRIPT ARGS... --port 0 --exit-on-stdin-eof` in dir
// and returns the URL of the first line that says {"listening": URL}, and a
// function returning its stderr; every later stdout line goes to onLine.
// Stdin is held open: its EOF tells the server its parent left. The
// process is killed at t.Cleanup, its stderr logged if the test failed; the
// test fails if it exits or does not listen within 30 s.
func startNode(t testing.TB, dir string, argv []string, onLine func(line []byte)) (string, func() string) {
	t.Helper()
	name := argv[0]
	cmd := exec.Command("node", append(argv, "--port", "0", "--exit-on-stdin-eof")...)
	cmd.Dir = dir
	var (
		mu     sync.Mutex
		stderr bytes.Buffer
	)
	cmd.Stderr = &syncWriter{mu: &mu, w: &stderr}
	errText := func() string {
		mu.Lock()
		defer mu.Unlock()
		return stderr.String()
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	listening := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := append([]byte(nil), sc.Bytes()...)
			// The listening line too, before the caller hears it listens.
			if onLine != nil {
				onLine(line)
			}
			var first struct {
				Listening string `json:"listening"`
			}
			if json.Unmarshal(line, &first) == nil && first.Listening != "" {
				select {
				case listening <- first.Listening:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		<-readDone
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", name, errText())
		}
	})
	select {
	case u := <-listening:
		return u, errText
	case <-readDone:
		t.Fatalf("%s exited before listening; stderr:\n%s", name, errText())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start within 30s; stderr:\n%s", name, errText())
	}
	return "", errText
}

// Stderr returns what the server printed on stderr so far.
func (s *NodeServer) Stderr() string { return s.stderrOf() }

// Records returns every record printed so far, in order.
func (s *NodeServer) Records() []ServerRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ServerRecord(nil), s.records...)
}

// Requests returns the HTTP requests that reached the server, in order.
func (s *NodeServer) Requests() []ServerRecord {
	var out []ServerRecord
	for _, r := range s.Records() {
		if r.Kind == "request" {
			out = append(out, r)
		}
	}
	return out
}

// Exchange returns the records of one HTTP exchange (request, response,
// body or SSE events, end), in order.
func (s *NodeServer) Exchange(seq int) []ServerRecord {
	var out []ServerRecord
	for _, r := range s.Records() {
		if r.Seq == seq && r.Kind != "app" && r.Kind != "error" {
			out = append(out, r)
		}
	}
	return out
}

// WaitFor returns the first record, past or future, for which match is true.
// It fails the test if none arrives within timeout.
func (s *NodeServer) WaitFor(t testing.TB, timeout time.Duration, match func(ServerRecord) bool) ServerRecord {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		recs, changed := s.records[seen:], s.changed
		seen = len(s.records)
		s.mu.Unlock()
		for _, r := range recs {
			if match(r) {
				return r
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("server.mjs: no matching record within %v", timeout)
			return ServerRecord{}
		}
	}
}

// NodeClient describes one run of client.mjs.
type NodeClient struct {
	SDK    string // "v2" or "v1"
	URL    string // a plain http MCP endpoint (a server, or bulkhead connect)
	Script string // steps separated by ';', e.g. `list-tools; call echo {"text":"hi"}`
	// Headers are sent on every request.
	Headers map[string]string
	// Args are further flags, e.g. "--trace" or "--negotiation", "pin".
	Args []string
	// Timeout bounds the whole run (default 60s); steps get a third each,
	// at most 10s.
	Timeout time.Duration
}

// ClientRun is what client.mjs printed.
type ClientRun struct {
	Connect ClientConnect
	Steps   []ClientStep
	// HTTP holds the exchanges the client made, with --trace.
	HTTP   []json.RawMessage
	Done   bool
	Failed int
	Stderr string
}

// ClientConnect is client.mjs's first line.
type ClientConnect struct {
	Connected       bool            `json:"connected"`
	SDK             string          `json:"sdk"`
	Era             string          `json:"era"` // "modern" (2026-07-28) or "legacy"
	ProtocolVersion string          `json:"protocolVersion"`
	SessionID       string          `json:"sessionId"`
	ServerInfo      json.RawMessage `json:"serverInfo"`
	Error           *StepError      `json:"error"`
}

// ClientStep is the outcome of one step.
type ClientStep struct {
	Step   string          `json:"step"`
	Args   []string        `json:"args"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *StepError      `json:"error"`
	MS     int             `json:"ms"`
}

// StepError is a step's error. Code is a JSON-RPC error code (a number) or
// an SDK error code (a string such as "UNSUPPORTED_RESULT_TYPE").
type StepError struct {
	Name    string          `json:"name"`
	Code    json.RawMessage `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// RPCCode returns the JSON-RPC error code, or 0 when Code is not a number.
func (e *StepError) RPCCode() int {
	if e == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(e.Code))
	return n
}

// Run runs client.mjs to completion and returns what it printed. It fails
// the test if the process cannot run or does not finish within the timeout;
// a failed connection or failed steps are left to the caller to judge.
func (c NodeClient) Run(t testing.TB) *ClientRun {
	t.Helper()
	dir := NodeHarness(t)
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	step := min(timeout/3, 10*time.Second)
	argv := []string{"client.mjs", "--sdk", c.SDK, "--url", c.URL, "--script", c.Script,
		"--timeout-ms", strconv.FormatInt(step.Milliseconds(), 10),
		"--deadline-ms", strconv.FormatInt(timeout.Milliseconds(), 10)}
	for k, v := range c.Headers {
		argv = append(argv, "--header", k+":"+v)
	}
	argv = append(argv, c.Args...)
	// The script bounds itself; the context is a backstop for a wedged node.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", argv...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	run := &ClientRun{Stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("client.mjs did not finish within %v; stderr:\n%s", timeout, stderr.String())
	}
	if exit, ok := err.(*exec.ExitError); err != nil && (!ok || exit.ExitCode() > 1) {
		t.Fatalf("client.mjs: %v; stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, line := range bytes.Split(stdout.Bytes(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(line, &probe); err != nil {
			t.Fatalf("client.mjs printed a non-JSON line %q", line)
		}
		var err error
		switch {
		case probe["connected"] != nil:
			err = json.Unmarshal(line, &run.Connect)
		case probe["step"] != nil:
			var s ClientStep
			err = json.Unmarshal(line, &s)
			run.Steps = append(run.Steps, s)
		case probe["done"] != nil:
			var d struct {
				Failed int `json:"failed"`
			}
			err = json.Unmarshal(line, &d)
			run.Done, run.Failed = true, d.Failed
		case probe["kind"] != nil:
			run.HTTP = append(run.HTTP, append(json.RawMessage(nil), line...))
		}
		if err != nil {
			t.Fatalf("client.mjs line %s: %v", line, err)
		}
	}
	return run
}

// Step returns the i-th step's outcome, failing the test if there is none.
func (r *ClientRun) Step(t testing.TB, i int) ClientStep {
	t.Helper()
	if i >= len(r.Steps) {
		t.Fatalf("client.mjs ran %d steps, want step %d; stderr:\n%s", len(r.Steps), i, r.Stderr)
	}
	return r.Steps[i]
}

// syncWriter serializes writes into w under mu.
type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
