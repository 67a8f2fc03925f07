// Package testenv is the exported test harness: it runs a real control plane
// on loopback (HTTPS, mTLS, a real store) for end-to-end tests, and enrolls
// agents into it the way a real agent does.
package testenv

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// Env is a running control plane.
type Env struct {
	T        testing.TB
	Server   *server.Server
	URL      string
	DataDir  string
	Operator *client.Client
	Clock    clock.Clock

	cfg    server.Config
	logger *slog.Logger
	cancel context.CancelFunc
	done   chan error
}

// Option adjusts the environment.
type Option func(*Env)

// WithClock runs the server on clk (e.g. a *clock.Fake set near now, since
// TLS peers check validity against the real time).
func WithClock(clk clock.Clock) Option { return func(e *Env) { e.Clock = clk } }

// WithStore runs on a store DSN (default: SQLite in the data directory).
func WithStore(dsn string) Option { return func(e *Env) { e.cfg.Store = dsn } }

// WithBackend runs on a fresh store of backend b.
func WithBackend(b storetest.Backend) Option {
	return func(e *Env) { e.cfg.Store, _ = b.DSN(e.T) }
}

// WithLogger sends the control plane's logs to logger (e.g. to check what
// they do not contain).
func WithLogger(l *slog.Logger) Option { return func(e *Env) { e.logger = l } }

// WithConfig edits the server configuration before start.
func WithConfig(f func(*server.Config)) Option { return func(e *Env) { f(&e.cfg) } }

// Start runs a control plane until the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	e := &Env{T: t, Clock: clock.Real{}, DataDir: t.TempDir()}
	e.cfg = server.Config{DataDir: e.DataDir, Listen: "127.0.0.1:0",
		TrustDomain: spiffeid.RequireTrustDomainFromString(server.DefaultTrustDomain)}
	for _, o := range opts {
		o(e)
	}
	e.start()
	t.Cleanup(e.Stop)
	return e
}

func (e *Env) start() {
	e.T.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := e.logger
	if logger == nil {
		logger = storetest.Logger(e.T)
	}
	srv, err := server.New(ctx, e.cfg, e.Clock, logger)
	if err != nil {
		cancel()
		e.T.Fatalf("start control plane: %v", err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		e.T.Fatalf("listen: %v", err)
	}
	// Keep the port across restarts.
	e.cfg.Listen = srv.Addr()
	e.Server, e.URL, e.cancel, e.done = srv, "https://"+srv.Addr(), cancel, make(chan error, 1)
	go func() { e.done <- srv.Serve(ctx) }()
	op, err := client.NewFromDir(e.URL, srv.OperatorDir())
	if err != nil {
		e.T.Fatalf("operator client: %v", err)
	}
	e.Operator = op
	e.waitReady()
}

func (e *Env) waitReady() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := e.Operator.HTTPClient().Get(e.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("control plane not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the control plane down (idempotent).
func (e *Env) Stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			e.T.Errorf("control plane exited: %v", err)
		}
	case <-time.After(10 * time.Second):
		e.T.Errorf("control plane did not stop")
	}
}

// Restart stops the control plane and starts it again on the same data
// directory, store and port.
func (e *Env) Restart() {
	e.T.Helper()
	e.Stop()
	e.start()
}

// NewJoinToken registers agent name and returns a join token for it.
func (e *Env) NewJoinToken(name string) string {
	e.T.Helper()
	ctx := context.Background()
	if _, err := e.Operator.CreateAgent(ctx, name, 0); err != nil {
		e.T.Fatalf("create agent %s: %v", name, err)
	}
	tok, err := e.Operator.JoinToken(ctx, name, 0)
	if err != nil {
		e.T.Fatalf("join token for %s: %v", name, err)
	}
	return tok.Token
}

// Enroll registers agent name, enrolls it with a join token, and returns its
// credential directory.
func (e *Env) Enroll(name string) string {
	e.T.Helper()
	ctx := context.Background()
	tok := e.NewJoinToken(name)
	dir := filepath.Join(e.T.TempDir(), name)
	if _, err := client.Enroll(ctx, e.URL, tok, dir); err != nil {
		e.T.Fatalf("enroll %s: %v", name, err)
	}
	return dir
}

// Client returns an API client authenticated by the credential in dir.
func (e *Env) Client(dir string) *client.Client {
	e.T.Helper()
	c, err := client.NewFromDir(e.URL, dir)
	if err != nil {
		e.T.Fatalf("client for %s: %v", dir, err)
	}
	return c
}
