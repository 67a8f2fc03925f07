package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// The measurement: time from `agent revoke` to the first refused
// request, and the agent's open streams closed — both under a second.
func TestGatewayRevocationTakesEffectWithinOneSecond(t *testing.T) {
	e := startGateway(t, "")
	ctx := context.Background()
	hc, _ := e.agentHTTP(t, "alpha", "reader")

	closed := openMCPStream(t, e, hc)

	// A session through the SDK keeps calling.
	cs := e.mcpSession(t, hc)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/a"}}); err != nil {
		t.Fatal(err)
	}

	tok, err := hc.Transport.(*client.GatewayTransport).Token()
	if err != nil {
		t.Fatal(err)
	}
	oldToken := tok.AccessToken

	start := time.Now()
	if _, err := e.Operator.RevokeAgent(ctx, "alpha", "compromised"); err != nil {
		t.Fatal(err)
	}
	var refusedAfter time.Duration
	for {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/a"}})
		if err != nil {
			refusedAfter = time.Since(start)
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("requests still allowed 5s after revocation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var streamClosedAfter time.Duration
	select {
	case at := <-closed:
		streamClosedAfter = at.Sub(start)
	case <-time.After(5 * time.Second):
		t.Fatal("the agent's open stream was not closed")
	}
	t.Logf("revocation: first refused request after %s, open stream closed after %s", refusedAfter, streamClosedAfter)
	if refusedAfter > time.Second || streamClosedAfter > time.Second {
		t.Fatalf("revocation took %s (request) / %s (stream); want under 1s", refusedAfter, streamClosedAfter)
	}
	// A fresh request is refused too: the gateway's 401 made the agent's
	// transport drop its token, and the control plane will not issue a
	// new one, so nothing is sent.
	req, _ := http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	var te *client.TokenError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "revoked") {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("new request after revocation: %v, want no token for a revoked agent", err)
	}
	// And a token obtained before the revocation is refused by the gateway
	// on a fresh connection.
	bare := &http.Client{Transport: hc.Transport.(*client.GatewayTransport).Bare().Transport}
	req, _ = http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+oldToken)
	if resp, err = bare.Do(req); err == nil {
		resp.Body.Close()
	}
	if err == nil && resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old token after revocation: %d", resp.StatusCode)
	}
}

// openMCPStream opens an MCP session and its standalone SSE stream by hand
// with hc, and returns a channel that receives the time the stream ends.
func openMCPStream(t *testing.T, e *gatewayEnv, hc *http.Client) <-chan time.Time {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatal("no session id")
	}
	note, _ := http.NewRequest(http.MethodPost, e.GatewayURL+"/mcp/files", strings.NewReader(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	note.Header.Set("Content-Type", "application/json")
	note.Header.Set("Accept", "application/json, text/event-stream")
	note.Header.Set("Mcp-Session-Id", sid)
	note.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	if resp, err := hc.Do(note); err == nil {
		resp.Body.Close()
	}
	streamReq, _ := http.NewRequest(http.MethodGet, e.GatewayURL+"/mcp/files", nil)
	streamReq.Header.Set("Accept", "text/event-stream")
	streamReq.Header.Set("Mcp-Session-Id", sid)
	streamReq.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	streamHC := *hc
	streamHC.Timeout = 0
	stream, err := streamHC.Do(streamReq)
	if err != nil {
		t.Fatal(err)
	}
	if stream.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", stream.StatusCode)
	}
	// A stream the test did not see end must not hold the server's
	// shutdown.
	t.Cleanup(func() { stream.Body.Close() })
	closed := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, stream.Body)
		closed <- time.Now()
	}()
	return closed
}

// A stream lives no longer than the token that opened it: past the token's
// expiry the gateway ends it, and the agent must come back with a fresh
// token, authenticated and authorized again.
func TestGatewayStreamEndsWithItsToken(t *testing.T) {
	fake := clock.NewFake(time.Now())
	e := startGateway(t, "", testenv.WithClock(fake))
	hc, _ := e.agentHTTP(t, "alpha", "reader")
	tok, err := hc.Transport.(*client.GatewayTransport).Token()
	if err != nil {
		t.Fatal(err)
	}
	closed := openMCPStream(t, e, hc)
	select {
	case <-closed:
		t.Fatal("the stream ended before its token expired")
	case <-time.After(100 * time.Millisecond):
	}
	fake.Advance(tok.Expiry.Sub(fake.Now()) + time.Second)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived its token")
	}
}
