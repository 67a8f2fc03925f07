package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

func callRead(cs *mcp.ClientSession, path string) error {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": path}})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("tool error: " + gatewaytest.Text(res))
	}
	return nil
}

// A Go agent's MCP session through the gateway survives its SVID's
// rotation with GatewayTransport: the open session (an HTTP/2 connection
// made with the old certificate) and a new one both keep working. Stacking
// oauth2.Transport on an mTLS client, the obvious alternative, does not:
// the new certificate's token goes out on the old certificate's
// connection, and the gateway refuses the mismatch.
func TestGatewayTransportFollowsSVIDRotation(t *testing.T) {
	e := gatewaytest.Start(t, "")
	dir, _ := e.Agent(t, "alpha", "reader")
	r, err := client.NewRotator(e.URL, dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Now())
	r.Clock = fake
	gt, err := r.Client().GatewayTransport(client.GatewayOptions{Resource: gatewaytest.Resource})
	if err != nil {
		t.Fatal(err)
	}
	r.OnRotate = func(*x509svid.SVID) { gt.Rotated() }
	cs := gatewaytest.Connect(t, e.GatewayURL+"/mcp/files", &http.Client{Transport: gt})
	naive := &http.Client{Transport: &oauth2.Transport{Source: r.Client().TokenSource(gatewaytest.Resource),
		Base: client.NewHTTPClient(r.Source(), client.AuthorizeGateways(r.Source().ID().TrustDomain(), "")).Transport}}
	csNaive := gatewaytest.Connect(t, e.GatewayURL+"/mcp/files", naive)
	for _, s := range []*mcp.ClientSession{cs, csNaive} {
		if err := callRead(s, "/srv/before"); err != nil {
			t.Fatalf("call before rotation: %v", err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	old := r.Source().Leaf()
	// Renew in a later second than the enrollment (certificate times have
	// one-second precision), so that the new SVID's half-life lies after
	// the fake clock's now and the rotator then waits.
	time.Sleep(time.Until(old.NotBefore.Add(ca.Backdate + 1100*time.Millisecond)))
	waitForWaiter(t, fake)
	fake.Advance(old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2).Sub(fake.Now()))
	for deadline := time.Now().Add(10 * time.Second); r.Source().Leaf().Equal(old); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the SVID did not rotate")
		}
	}

	if err := callRead(cs, "/srv/open-session"); err != nil {
		t.Fatalf("call on the open session after rotation: %v", err)
	}
	cs2 := gatewaytest.Connect(t, e.GatewayURL+"/mcp/files", &http.Client{Transport: gt})
	if err := callRead(cs2, "/srv/new-session"); err != nil {
		t.Fatalf("call on a new session after rotation: %v", err)
	}
	tok, err := gt.Token()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := client.TokenThumbprint(tok.AccessToken), client.Thumbprint(r.Source().Leaf()); got != want {
		t.Fatalf("the token is bound to %s, want the new certificate %s", got, want)
	}
	if err := callRead(csNaive, "/srv/naive"); err == nil {
		t.Fatal("oauth2.Transport over one mTLS pool worked after rotation; the test no longer shows what GatewayTransport fixes")
	}
}
