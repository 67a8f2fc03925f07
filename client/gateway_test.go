package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
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

	rotate(t, r, fake)

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

// A gateway's control-plane client keeps its event stream open on one
// connection for as long as it runs. After its SVID rotates, its other
// requests must present the new SVID: multiplexed onto the stream's
// HTTP/2 connection they would present the old one, and be refused once it
// expires (the control plane checks every request's certificate). A server
// with the control plane's certificate records what each request presents.
func TestControlPlaneClientFollowsSVIDRotation(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "edge")
	if _, err := env.Operator.IssueComponentSVID(ctx, "gateway", "edge", dir); err != nil {
		t.Fatal(err)
	}
	r, err := client.NewRotator(env.URL, dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Now())
	r.Clock = fake

	presented := make(chan string, 1)
	srv := &http.Server{TLSConfig: env.Server.TLSConfig(), Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/stream" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-req.Context().Done()
			return
		}
		presented <- req.TLS.PeerCertificates[0].SerialNumber.Text(16)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	cp, err := client.New("https://"+ln.Addr().String(), r.Source())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := (&http.Client{Transport: cp.HTTPClient().Transport}).Get("https://" + ln.Addr().String() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.ProtoMajor != 2 {
		t.Fatalf("the stream uses HTTP/%d; the test needs HTTP/2's multiplexing", stream.ProtoMajor)
	}
	ping := func() string {
		resp, err := cp.HTTPClient().Get("https://" + ln.Addr().String() + "/ping")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-presented
	}
	old := r.Source().Leaf()
	if got := ping(); got != old.SerialNumber.Text(16) {
		t.Fatalf("before rotation the request presented %s, want %s", got, old.SerialNumber.Text(16))
	}

	rotate(t, r, fake)
	if got, want := ping(), r.Source().Leaf().SerialNumber.Text(16); got != want {
		t.Fatalf("after rotation, with the stream open, a request presented %s, want the new SVID %s", got, want)
	}
}

// rotate runs r until the test ends and has it renew its SVID now, by
// moving its fake clock to the SVID's half-life.
func rotate(t *testing.T, r *client.Rotator, fake *clock.Fake) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	old := r.Source().Leaf()
	waitForWaiter(t, fake)
	fake.Advance(old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 2).Sub(fake.Now()))
	for deadline := time.Now().Add(10 * time.Second); r.Source().Leaf().Equal(old); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the SVID did not rotate")
		}
	}
}
