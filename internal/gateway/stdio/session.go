package stdio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// session is one client session and the process serving it.
type session struct {
	b  *Bridge
	id string

	// Set by start, before any goroutine of the session runs.
	cmd                    *exec.Cmd
	pid                    int
	stdin, stdout, stderr  *os.File // our ends of the pipes
	readerDone, stderrDone chan struct{}

	wsem     chan struct{} // one writer to stdin at a time; a channel so waiting can be cancelled
	ready    atomic.Bool   // initialize succeeded: visible to clients
	version  string        // negotiated protocol version; written before ready is set
	done     chan struct{} // closed when the session ends
	outReady chan struct{} // signalled when out gains a message
	endOnce  sync.Once

	mu         sync.Mutex
	endErr     error // why the session ended; set before done is closed
	pending    map[jsonrpc.ID]chan *jsonrpc.Response
	serverReqs map[jsonrpc.ID]struct{} // server requests the client has not answered
	out        []string                // messages for the GET stream
	outBytes   int
	streamOpen bool
	inflight   int // POSTs being served
	lastActive time.Time
}

func newSession(b *Bridge, id string) *session {
	now := b.cfg.Clock.Now()
	return &session{
		b:          b,
		id:         id,
		wsem:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		outReady:   make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		stderrDone: make(chan struct{}),
		pending:    make(map[jsonrpc.ID]chan *jsonrpc.Response),
		serverReqs: make(map[jsonrpc.ID]struct{}),
		lastActive: now,
	}
}

// start runs the program with its own pipes: ours stay non-blocking, so
// writes can time out and reads can be cut short by Close.
func (s *session) start() error {
	var files []*os.File
	pipe := func() (r, w *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil
		}
		files = append(files, r, w)
		return r, w
	}
	inR, inW := pipe()
	outR, outW := pipe()
	errR, errW := pipe()
	if len(files) != 6 {
		closeAll(files)
		return errors.New("creating pipes failed")
	}
	cmd := &exec.Cmd{
		Path:        s.b.path,
		Args:        s.b.cfg.Command,
		Env:         s.b.env, // never nil: nil would mean the gateway's environment
		Dir:         s.b.cfg.Dir,
		Stdin:       inR,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: sysProcAttr(),
	}
	started, done := func() error { return nil }, func() {}
	if s.b.cfg.Confine != nil {
		var err error
		if started, done, err = s.b.cfg.Confine(cmd, s.id); err != nil {
			closeAll(files)
			return err
		}
	}
	err := cmd.Start()
	closeAll([]*os.File{inR, outW, errW}) // the child has its own copies
	if err == nil {
		if err = started(); err != nil {
			_ = cmd.Wait()
		}
	}
	if err != nil {
		done()
		closeAll([]*os.File{inW, outR, errR})
		return err
	}
	s.cmd, s.pid = cmd, cmd.Process.Pid
	s.stdin, s.stdout, s.stderr = inW, outR, errR

	waitc := make(chan error, 1)
	s.b.wg.Add(4)
	go func() {
		defer s.b.wg.Done()
		err := cmd.Wait()
		done()
		waitc <- err
	}()
	go s.readStdout()
	go s.readStderr()
	go s.lifecycle(waitc)
	return nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// lifecycle stops the process when the session ends (stdin closed, then
// SIGTERM, then SIGKILL, as the MCP spec asks), or ends the session when the
// process exits; either way it reaps the process and its group.
func (s *session) lifecycle(waitc <-chan error) {
	defer s.b.wg.Done()
	var exitErr error
	select {
	case exitErr = <-waitc:
	case <-s.done:
		_ = s.stdin.Close()
		var exited bool
		if exitErr, exited = waitFor(waitc, s.b.cfg.ShutdownGrace); !exited {
			terminate(s.cmd.Process)
			if exitErr, exited = waitFor(waitc, s.b.cfg.ShutdownGrace); !exited {
				kill(s.cmd.Process)
				exitErr = <-waitc
			}
		}
	}
	// Descendants that outlived the leader share its process group.
	kill(s.cmd.Process)
	// Let the readers drain what was written before the exit, without
	// waiting on a descendant that escaped the group and holds a pipe.
	drain := func(done <-chan struct{}, f *os.File) {
		t := time.NewTimer(drainTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
		_ = f.Close()
		<-done
	}
	drain(s.readerDone, s.stdout)
	drain(s.stderrDone, s.stderr)
	_ = s.stdin.Close()
	s.end(fmt.Errorf("%w: upstream exited: %v", ErrUpstream, exitErr))
	s.b.log.Info("stdio: process reaped", "session", s.id, "pid", s.pid, "exit", fmt.Sprint(exitErr))
}

func waitFor(c <-chan error, d time.Duration) (error, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-c:
		return err, true
	case <-t.C:
		return nil, false
	}
}

// end ends the session once: it leaves the bridge, waiters are released
// with reason, and lifecycle stops the process.
func (s *session) end(reason error) {
	s.endOnce.Do(func() {
		s.b.mu.Lock()
		if s.b.sessions[s.id] == s {
			delete(s.b.sessions, s.id)
		}
		s.b.mu.Unlock()
		s.mu.Lock()
		s.endErr = reason
		s.pending, s.serverReqs = nil, nil
		s.mu.Unlock()
		close(s.done)
		if s.ready.Load() {
			s.b.log.Info("stdio: session ended", "session", s.id, "pid", s.pid, "reason", reason)
			if f := s.b.cfg.OnSessionEnd; f != nil {
				f(s.id, reason)
			}
		}
	})
}

func (s *session) reason() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endErr
}

// markReady makes an initialized session visible; false if it has ended.
func (s *session) markReady(version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endErr != nil {
		return false
	}
	s.version = version
	s.lastActive = s.b.cfg.Clock.Now()
	s.ready.Store(true)
	return true
}

func (s *session) begin(now time.Time) {
	s.mu.Lock()
	s.inflight++
	s.lastActive = now
	s.mu.Unlock()
}

func (s *session) finish(now time.Time) {
	s.mu.Lock()
	s.inflight--
	s.lastActive = now
	s.mu.Unlock()
}

// idleFor is how long the session has been idle: zero while a POST is in
// flight or it is still initializing.
func (s *session) idleFor(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight > 0 || !s.ready.Load() {
		return 0
	}
	return now.Sub(s.lastActive)
}

// send writes one line to the program's stdin.
func (s *session) send(ctx context.Context, line []byte) error {
	select {
	case s.wsem <- struct{}{}:
	case <-s.done:
		return s.reason()
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wsem }()
	select {
	case <-s.done:
		return s.reason()
	default:
	}
	// The deadline is wall-clock time, enforced by the runtime poller.
	_ = s.stdin.SetWriteDeadline(time.Now().Add(s.b.cfg.WriteTimeout))
	if _, err := s.stdin.Write(line); err != nil {
		// A partial line would corrupt the program's framing: end it.
		s.end(fmt.Errorf("%w: writing to stdin: %w", ErrUpstream, err))
		return s.reason()
	}
	return nil
}

// call sends a request and waits for its response. Cancelling ctx abandons
// the wait, not the session.
func (s *session) call(ctx context.Context, req *jsonrpc.Request) (*jsonrpc.Response, error) {
	line, err := encodeLine(req)
	if err != nil {
		return nil, err
	}
	ch := make(chan *jsonrpc.Response, 1)
	s.mu.Lock()
	switch {
	case s.endErr != nil:
		s.mu.Unlock()
		return nil, s.endErr
	case s.pending[req.ID] != nil:
		s.mu.Unlock()
		return nil, errDuplicateID
	case len(s.pending) >= s.b.cfg.MaxPendingRequests:
		s.mu.Unlock()
		return nil, errTooManyPending
	}
	s.pending[req.ID] = ch
	s.mu.Unlock()

	if err := s.send(ctx, line); err != nil {
		s.forget(req.ID)
		return nil, err
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-s.done:
		select {
		case resp := <-ch: // answered just before the end
			return resp, nil
		default:
			return nil, s.reason()
		}
	case <-ctx.Done():
		s.forget(req.ID)
		return nil, ctx.Err()
	}
}

func (s *session) forget(id jsonrpc.ID) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// answerServerRequest reports whether id names a server request the client
// has yet to answer, and marks it answered.
func (s *session) answerServerRequest(id jsonrpc.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.serverReqs[id]; !ok {
		return false
	}
	delete(s.serverReqs, id)
	return true
}

// readStdout routes each line the program writes until its output ends.
func (s *session) readStdout() {
	defer s.b.wg.Done()
	defer close(s.readerDone)
	br := bufio.NewReaderSize(s.stdout, 64<<10)
	for {
		line, err := readLine(br, s.b.cfg.MaxMessageSize)
		if len(line) > 0 {
			s.route(line)
		}
		if errors.Is(err, errLineTooLong) {
			s.b.log.Warn("stdio: upstream message too large; ending session", "session", s.id, "limit", s.b.cfg.MaxMessageSize)
			s.end(fmt.Errorf("%w: upstream sent a message over %d bytes", ErrUpstream, s.b.cfg.MaxMessageSize))
			return
		}
		if err != nil {
			s.end(fmt.Errorf("%w: upstream closed its output", ErrUpstream))
			return
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most max bytes (plus its newline). At the
// end of the output it returns the unterminated rest with the error.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, err
	}
}

// route delivers one message from the program: a response to the POST
// waiting for it, anything else to the GET stream.
func (s *session) route(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	msg, err := jsonrpc.DecodeMessage(line)
	if err != nil {
		// Programs print banners to stdout; nothing but JSON-RPC is passed on.
		s.b.log.Warn("stdio: dropped upstream output that is not a JSON-RPC message", "session", s.id, "error", err, "line", truncate(line, 200))
		return
	}
	switch m := msg.(type) {
	case *jsonrpc.Response:
		s.mu.Lock()
		ch := s.pending[m.ID]
		delete(s.pending, m.ID)
		s.mu.Unlock()
		if ch == nil {
			s.b.log.Debug("stdio: dropped a response nobody waits for", "session", s.id, "id", m.ID.Raw())
			return
		}
		ch <- m // buffered; the only send
	case *jsonrpc.Request:
		s.toClient(m)
	}
}

// toClient queues a notification or server request for the GET stream.
func (s *session) toClient(m *jsonrpc.Request) {
	data, err := jsonrpc.EncodeMessage(m)
	if err != nil {
		s.b.log.Warn("stdio: dropped upstream message that cannot be encoded", "session", s.id, "error", err)
		return
	}
	s.mu.Lock()
	if s.endErr != nil {
		s.mu.Unlock()
		return
	}
	var refusal string
	switch {
	case m.IsCall() && len(s.serverReqs) >= s.b.cfg.MaxPendingRequests:
		refusal = "too many requests waiting for the client"
	case len(s.out) >= s.b.cfg.MaxBufferedMessages || s.outBytes+len(data) > 4*s.b.cfg.MaxMessageSize:
		refusal = "the client is not reading its event stream"
	}
	if refusal == "" {
		if m.IsCall() {
			s.serverReqs[m.ID] = struct{}{}
		} else if m.Method == "notifications/cancelled" {
			// The server gave up on a request: the client's answer is no
			// longer expected.
			if id, ok := cancelledID(m.Params); ok {
				delete(s.serverReqs, id)
			}
		}
		s.out = append(s.out, string(data))
		s.outBytes += len(data)
	}
	s.mu.Unlock()
	if refusal == "" {
		select {
		case s.outReady <- struct{}{}:
		default:
		}
		return
	}
	s.b.log.Warn("stdio: dropped upstream message for the client", "session", s.id, "method", m.Method, "reason", refusal)
	if m.IsCall() {
		// Answer for the client, so the program does not wait forever.
		resp := &jsonrpc.Response{ID: m.ID, Error: &jsonrpc.Error{Code: CodeBusy, Message: refusal}}
		if line, err := encodeLine(resp); err == nil {
			_ = s.send(context.Background(), line)
		}
	}
}

func cancelledID(params json.RawMessage) (jsonrpc.ID, bool) {
	var p struct {
		RequestID any `json:"requestId"`
	}
	if json.Unmarshal(params, &p) != nil {
		return jsonrpc.ID{}, false
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	return id, err == nil && id.IsValid()
}

// takeOutbound removes and returns the queued messages for the GET stream.
func (s *session) takeOutbound() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.out
	s.out, s.outBytes = nil, 0
	return out
}

// openStream claims the session's one GET stream.
func (s *session) openStream(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streamOpen {
		return false
	}
	s.streamOpen = true
	s.lastActive = now
	return true
}

func (s *session) closeStream(now time.Time) {
	s.mu.Lock()
	s.streamOpen = false
	s.lastActive = now
	s.mu.Unlock()
}

// readStderr logs the program's stderr line by line, cutting long lines.
func (s *session) readStderr() {
	defer s.b.wg.Done()
	defer close(s.stderrDone)
	br := bufio.NewReaderSize(s.stderr, stderrLineSize)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 {
			s.b.log.Info("stdio: upstream stderr", "session", s.id, "pid", s.pid, "line", string(line))
		}
		for isPrefix && err == nil { // skip the rest of an over-long line
			_, isPrefix, err = br.ReadLine()
		}
		if err != nil {
			return
		}
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
