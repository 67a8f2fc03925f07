// Package stdio serves the MCP streamable HTTP transport for an MCP server
// that is a stdio program, so the gateway can treat every upstream as an
// http.Handler.
//
// Each session is its own process: a POST of initialize without a session
// id starts the program and answers with a fresh, unguessable
// Mcp-Session-Id. Stdio servers serve one client, and a process per session
// keeps agents apart. Client messages are checked (see parseMessage), then
// written to the program's stdin as newline-delimited JSON; a call's POST
// waits for the response with its id and answers application/json.
// Everything else the program writes (notifications, its own requests such
// as sampling or elicitation) goes to the session's GET event stream, held
// in a bounded buffer while none is open. DELETE, idleness, Close, or the
// program exiting end the session and its process group.
//
// The bridge does not authenticate: the gateway in front of it binds a
// session id to the caller that created it.
package stdio

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
)

// DefaultPath is the PATH a program gets when Config.Env sets none.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin"

// JSON-RPC error codes of the bridge's own failures, in the range JSON-RPC
// leaves to implementations. Client mistakes use the standard codes.
const (
	// CodeUpstreamFailed: the program could not start, exited, or broke the
	// protocol before answering (HTTP 502).
	CodeUpstreamFailed = -32010
	// CodeSessionNotFound: the session does not exist or has ended (HTTP 404).
	CodeSessionNotFound = -32011
	// CodeBusy: too many sessions or pending requests, or the bridge is
	// closed (HTTP 503 or 429).
	CodeBusy = -32012
	// CodeTimeout: the request's context ended before the program answered
	// (HTTP 504).
	CodeTimeout = -32013
)

// Reasons a session ends, as passed to Config.OnSessionEnd (wrapped).
var (
	// ErrUpstream: the program failed to start, exited, or broke the protocol.
	ErrUpstream = errors.New("stdio: upstream failed")
	// ErrSessionClosed: the client deleted the session or it was idle.
	ErrSessionClosed = errors.New("stdio: session closed")
	// ErrClosed: the bridge was closed.
	ErrClosed = errors.New("stdio: bridge closed")
)

const (
	sessionHeader  = "Mcp-Session-Id"
	versionHeader  = "Mcp-Protocol-Version"
	drainTimeout   = time.Second     // for output left in pipes after an exit
	closeMargin    = 5 * time.Second // Close waits this long past ShutdownGrace
	maxReapPeriod  = time.Minute
	stderrLineSize = 4 << 10
)

// Config configures a Bridge. Only Command is required.
type Config struct {
	// Command is the program and its arguments. A name without a slash is
	// looked up in the PATH of Env (never the gateway's own PATH).
	Command []string
	// Env is the program's whole environment, as KEY=VALUE. The gateway's
	// environment is never passed on, so its secrets cannot leak into tools.
	// If Env has no PATH, DefaultPath is added.
	Env []string
	// Dir is the program's working directory; default "/", so that relative
	// paths never land in the gateway's own directory.
	Dir string
	// MaxSessions bounds concurrent sessions, and so processes; default 64.
	MaxSessions int
	// MaxPendingRequests bounds a session's calls awaiting a response, and
	// separately its server requests awaiting the client; default 32.
	MaxPendingRequests int
	// MaxMessageSize bounds one message in each direction, in bytes;
	// default 4 MiB. A larger POST is refused; a larger line from the
	// program ends the session (its response cannot be told apart).
	MaxMessageSize int
	// MaxBufferedMessages bounds messages held for a session's GET stream
	// while none is open (and their bytes, to 4×MaxMessageSize); default
	// 256. Beyond it notifications are dropped and server requests refused.
	MaxBufferedMessages int
	// MaxDepth bounds the nesting of objects and arrays in a client
	// message; default 64.
	MaxDepth int
	// SessionIdleTimeout ends a session with no POST in flight and no
	// request for this long; default 15m.
	SessionIdleTimeout time.Duration
	// WriteTimeout bounds one write to the program's stdin; a program that
	// stops reading for this long is ended. Default 10s.
	WriteTimeout time.Duration
	// ShutdownGrace is how long an ending program gets after stdin closes
	// before SIGTERM, and again before SIGKILL; default 1s.
	ShutdownGrace time.Duration
	// Logger receives session events and the programs' stderr; default
	// discards.
	Logger *slog.Logger
	// Clock drives idle expiry; default the wall clock.
	Clock clock.Clock
	// Confine, if set, prepares each session's program to run confined
	// (see internal/sandbox): started runs once the process has started,
	// and done once it has been waited for. An error refuses the session.
	Confine func(cmd *exec.Cmd, session string) (started func() error, done func(), err error)
	// OnSessionEnd, if set, is called once when an initialized session
	// ends, with a reason wrapping ErrUpstream, ErrSessionClosed or
	// ErrClosed. It must not block.
	OnSessionEnd func(id string, reason error)
}

// Bridge is an http.Handler serving the MCP streamable HTTP transport for
// a stdio MCP server, one process per session.
type Bridge struct {
	cfg  Config
	path string // resolved Command[0]
	env  []string
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // including sessions still initializing
	closed   bool

	stop chan struct{}
	wg   sync.WaitGroup // every goroutine the bridge starts
}

var _ http.Handler = (*Bridge)(nil)

// New checks cfg and returns a Bridge. It starts no process until a client
// initializes a session.
func New(cfg Config) (*Bridge, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("stdio: config: command is required")
	}
	env, pathEnv, err := buildEnv(cfg.Env)
	if err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		cfg.Dir = "/"
	}
	if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("stdio: config: dir %q is not a directory", cfg.Dir)
	}
	path, err := lookPath(cfg.Command[0], pathEnv, cfg.Dir)
	if err != nil {
		return nil, err
	}
	setDefault(&cfg.MaxSessions, 64)
	setDefault(&cfg.MaxPendingRequests, 32)
	setDefault(&cfg.MaxMessageSize, 4<<20)
	setDefault(&cfg.MaxBufferedMessages, 256)
	setDefault(&cfg.MaxDepth, 64)
	setDefault(&cfg.SessionIdleTimeout, 15*time.Minute)
	setDefault(&cfg.WriteTimeout, 10*time.Second)
	setDefault(&cfg.ShutdownGrace, time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	b := &Bridge{
		cfg:      cfg,
		path:     path,
		env:      env,
		log:      cfg.Logger.With("upstream", filepath.Base(cfg.Command[0])),
		sessions: make(map[string]*session),
		stop:     make(chan struct{}),
	}
	b.wg.Add(1)
	go b.reapIdle()
	return b, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// buildEnv checks env and adds DefaultPath if it has no PATH. The result is
// never nil: a nil exec.Cmd.Env would mean the gateway's environment.
func buildEnv(in []string) (env []string, path string, err error) {
	env = make([]string, 0, len(in)+1)
	seen := make(map[string]bool, len(in))
	path = DefaultPath
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsRune(kv, 0) {
			return nil, "", fmt.Errorf("stdio: config: env entry %.40q is not KEY=VALUE", kv)
		}
		if seen[k] {
			return nil, "", fmt.Errorf("stdio: config: env sets %q twice", k)
		}
		seen[k] = true
		if k == "PATH" {
			path = v
		}
		env = append(env, kv)
	}
	if !seen["PATH"] {
		env = append(env, "PATH="+DefaultPath)
	}
	return env, path, nil
}

// lookPath finds name the way a shell with PATH=pathEnv would, except that
// relative PATH entries are skipped (they would depend on the directory).
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if !isExecutable(p) {
			return "", fmt.Errorf("stdio: config: command %q is not an executable file", name)
		}
		return name, nil // exec resolves a relative path against Dir itself
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(d) {
			continue
		}
		if p := filepath.Join(d, name); isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("stdio: config: command %q not found in PATH %q", name, pathEnv)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Sessions reports how many sessions exist, including ones initializing.
func (b *Bridge) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// Close ends every session, kills their processes and waits (bounded) for
// them to be reaped. Requests after Close get 503.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	all := make([]*session, 0, len(b.sessions))
	for _, s := range b.sessions {
		all = append(all, s)
	}
	b.mu.Unlock()
	close(b.stop)
	for _, s := range all {
		s.end(ErrClosed)
	}
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	t := time.NewTimer(2*b.cfg.ShutdownGrace + drainTimeout + closeMargin)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return errors.New("stdio: closing: upstream processes did not exit in time")
	}
}

// reapIdle ends sessions idle for longer than SessionIdleTimeout.
func (b *Bridge) reapIdle() {
	defer b.wg.Done()
	period := min(b.cfg.SessionIdleTimeout/4, maxReapPeriod)
	for {
		select {
		case <-b.stop:
			return
		case <-b.cfg.Clock.After(period):
		}
		now := b.cfg.Clock.Now()
		b.mu.Lock()
		var idle []*session
		for _, s := range b.sessions {
			if s.idleFor(now) > b.cfg.SessionIdleTimeout {
				idle = append(idle, s)
			}
		}
		b.mu.Unlock()
		for _, s := range idle {
			s.end(fmt.Errorf("%w: idle for over %v", ErrSessionClosed, b.cfg.SessionIdleTimeout))
		}
	}
}

// ServeHTTP serves one request of the streamable HTTP transport.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		b.servePOST(w, r)
	case http.MethodGet:
		b.serveGET(w, r)
	case http.MethodDelete:
		b.serveDELETE(w, r)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "stdio: method not allowed", http.StatusMethodNotAllowed)
	}
}

func (b *Bridge) servePOST(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeRPCError(w, &rpcError{status: http.StatusUnsupportedMediaType, code: jsonrpc.CodeInvalidRequest, msg: "Content-Type must be application/json"})
		return
	}
	if !accepts(r, "application/json") {
		writeRPCError(w, &rpcError{status: http.StatusNotAcceptable, code: jsonrpc.CodeInvalidRequest, msg: "Accept must allow application/json"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(b.cfg.MaxMessageSize)))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			writeRPCError(w, &rpcError{status: http.StatusRequestEntityTooLarge, code: jsonrpc.CodeInvalidRequest, msg: fmt.Sprintf("message is over %d bytes", b.cfg.MaxMessageSize)})
			return
		}
		writeRPCError(w, parseError("reading body failed"))
		return
	}
	msg, rerr := parseMessage(body, b.cfg.MaxDepth)
	if rerr != nil {
		writeRPCError(w, rerr)
		return
	}
	var id jsonrpc.ID
	switch m := msg.(type) {
	case *jsonrpc.Request:
		id = m.ID
		if m.Method == "initialize" {
			b.initialize(w, r, m)
			return
		}
	case *jsonrpc.Response:
		id = m.ID
	}

	s, rerr := b.lookup(r)
	if rerr != nil {
		rerr.id = id
		writeRPCError(w, rerr)
		return
	}
	s.begin(b.cfg.Clock.Now())
	defer func() { s.finish(b.cfg.Clock.Now()) }()

	switch m := msg.(type) {
	case *jsonrpc.Request:
		if m.IsCall() {
			resp, err := s.call(r.Context(), m)
			if err != nil {
				b.writeCallError(w, m.ID, err)
				return
			}
			writeResponse(w, resp)
			return
		}
		b.forward(w, r, s, m)
	case *jsonrpc.Response:
		if !s.answerServerRequest(m.ID) {
			writeRPCError(w, invalid(m.ID, "no request from the server is waiting for this id"))
			return
		}
		b.forward(w, r, s, m)
	}
}

// forward writes a notification or a response to the program: 202.
func (b *Bridge) forward(w http.ResponseWriter, r *http.Request, s *session, msg jsonrpc.Message) {
	line, err := encodeLine(msg)
	if err == nil {
		err = s.send(r.Context(), line)
	}
	if err != nil {
		b.writeCallError(w, jsonrpc.ID{}, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// initialize starts a session: a new process, which must answer the
// initialize request before the session becomes visible.
func (b *Bridge) initialize(w http.ResponseWriter, r *http.Request, req *jsonrpc.Request) {
	if !req.IsCall() {
		writeRPCError(w, invalid(jsonrpc.ID{}, "initialize must be a request with an id"))
		return
	}
	if len(r.Header.Values(sessionHeader)) > 0 {
		writeRPCError(w, invalid(req.ID, "initialize must not carry an %s header", sessionHeader))
		return
	}
	s, err := b.spawn()
	if err != nil {
		b.writeCallError(w, req.ID, err)
		return
	}
	resp, err := s.call(r.Context(), req)
	if err != nil {
		// The client never learns this session's id, so nothing could
		// resume it: end it whatever went wrong.
		s.end(fmt.Errorf("%w: initialize did not complete: %w", ErrSessionClosed, err))
		b.writeCallError(w, req.ID, err)
		return
	}
	if resp.Error != nil {
		s.end(fmt.Errorf("%w: upstream refused initialize", ErrSessionClosed))
		writeResponse(w, resp)
		return
	}
	if !s.markReady(protocolVersion(resp.Result)) {
		b.writeCallError(w, req.ID, s.reason())
		return
	}
	b.log.Info("stdio: session started", "session", s.id, "pid", s.pid)
	w.Header().Set(sessionHeader, s.id)
	writeResponse(w, resp)
}

// spawn reserves a session slot and starts its process.
func (b *Bridge) spawn() (*session, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if len(b.sessions) >= b.cfg.MaxSessions {
		b.mu.Unlock()
		return nil, errTooManySessions
	}
	s := newSession(b, rand.Text())
	b.sessions[s.id] = s
	// Counted under mu while not closed, so Close's Wait covers the
	// goroutines start adds.
	b.wg.Add(1)
	b.mu.Unlock()
	defer b.wg.Done()
	if err := s.start(); err != nil {
		b.log.Error("stdio: starting upstream failed", "error", err)
		s.end(fmt.Errorf("%w: starting %s: %w", ErrUpstream, b.cfg.Command[0], err))
		return nil, s.reason()
	}
	return s, nil
}

func (b *Bridge) serveGET(w http.ResponseWriter, r *http.Request) {
	if !accepts(r, "text/event-stream") {
		http.Error(w, "stdio: Accept must allow text/event-stream", http.StatusNotAcceptable)
		return
	}
	s, rerr := b.lookup(r)
	if rerr != nil {
		http.Error(w, "stdio: "+rerr.msg, rerr.status)
		return
	}
	if !s.openStream(b.cfg.Clock.Now()) {
		http.Error(w, "stdio: a GET stream is already open for this session", http.StatusConflict)
		return
	}
	defer s.closeStream(b.cfg.Clock.Now())

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	// Headers now, so the client knows the stream is open before any event.
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	sw := sse.NewWriter(w)
	for {
		for _, m := range s.takeOutbound() {
			if err := sw.WriteEvent(sse.Event{Data: m}); err != nil {
				b.log.Debug("stdio: GET stream broke; message lost", "session", s.id, "error", err)
				return
			}
		}
		select {
		case <-s.outReady:
		case <-r.Context().Done():
			return
		case <-s.done:
			// Deliver what the program said last, then end the stream.
			for _, m := range s.takeOutbound() {
				if sw.WriteEvent(sse.Event{Data: m}) != nil {
					return
				}
			}
			return
		}
	}
}

func (b *Bridge) serveDELETE(w http.ResponseWriter, r *http.Request) {
	s, rerr := b.lookup(r)
	if rerr != nil {
		http.Error(w, "stdio: "+rerr.msg, rerr.status)
		return
	}
	s.end(fmt.Errorf("%w: deleted by the client", ErrSessionClosed))
	w.WriteHeader(http.StatusNoContent)
}

// lookup finds the initialized session a request names.
func (b *Bridge) lookup(r *http.Request) (*session, *rpcError) {
	ids := r.Header.Values(sessionHeader)
	switch {
	case len(ids) == 0:
		return nil, invalid(jsonrpc.ID{}, "%s header required (initialize first)", sessionHeader)
	case len(ids) > 1:
		return nil, invalid(jsonrpc.ID{}, "more than one %s header", sessionHeader)
	}
	b.mu.Lock()
	closed := b.closed
	s := b.sessions[ids[0]]
	b.mu.Unlock()
	if closed {
		return nil, &rpcError{status: http.StatusServiceUnavailable, code: CodeBusy, msg: "the bridge is closed"}
	}
	if s == nil || !s.ready.Load() {
		return nil, &rpcError{status: http.StatusNotFound, code: CodeSessionNotFound, msg: "session not found"}
	}
	// A client speaking another protocol version than it negotiated would
	// be misread by the program (spec: 400).
	if v := r.Header.Get(versionHeader); v != "" && s.version != "" && v != s.version {
		return nil, invalid(jsonrpc.ID{}, "%s %.32q is not the session's %q", versionHeader, v, s.version)
	}
	return s, nil
}

var (
	errTooManySessions = errors.New("stdio: too many sessions")
	errTooManyPending  = errors.New("stdio: too many pending requests")
	errDuplicateID     = errors.New("stdio: request id already pending")
)

// writeCallError maps an error from spawning, sending or calling to a
// response; the cause, if internal, has been logged where it happened.
func (b *Bridge) writeCallError(w http.ResponseWriter, id jsonrpc.ID, err error) {
	e := &rpcError{id: id}
	switch {
	case errors.Is(err, errDuplicateID):
		e.status, e.code, e.msg = http.StatusBadRequest, jsonrpc.CodeInvalidRequest, "a request with this id is already pending"
	case errors.Is(err, errTooManyPending):
		e.status, e.code, e.msg = http.StatusTooManyRequests, CodeBusy, "too many pending requests in this session"
	case errors.Is(err, errTooManySessions):
		w.Header().Set("Retry-After", "1")
		e.status, e.code, e.msg = http.StatusServiceUnavailable, CodeBusy, "too many sessions"
	case errors.Is(err, ErrClosed):
		e.status, e.code, e.msg = http.StatusServiceUnavailable, CodeBusy, "the bridge is closed"
	case errors.Is(err, ErrUpstream):
		e.status, e.code, e.msg = http.StatusBadGateway, CodeUpstreamFailed, "the upstream MCP server failed"
	case errors.Is(err, ErrSessionClosed):
		e.status, e.code, e.msg = http.StatusNotFound, CodeSessionNotFound, "session ended"
	case errors.Is(err, context.DeadlineExceeded):
		e.status, e.code, e.msg = http.StatusGatewayTimeout, CodeTimeout, "the upstream MCP server did not answer in time"
	case errors.Is(err, context.Canceled):
		return // the client is gone; nobody reads an answer
	default:
		b.log.Error("stdio: unexpected error", "error", err)
		e.status, e.code, e.msg = http.StatusBadGateway, CodeUpstreamFailed, "the upstream MCP server failed"
	}
	writeRPCError(w, e)
}

// accepts reports whether the Accept header allows mediaType. No header
// allows anything (RFC 9110).
func accepts(r *http.Request, mediaType string) bool {
	values := r.Header.Values("Accept")
	if len(values) == 0 {
		return true
	}
	typ, _, _ := strings.Cut(mediaType, "/")
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			base, _, _ := strings.Cut(part, ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case mediaType, typ + "/*", "*/*":
				return true
			}
		}
	}
	return false
}
