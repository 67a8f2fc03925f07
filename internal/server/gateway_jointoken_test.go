package server_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

// A standalone gateway enrolls with a one-time join token, its key made on
// its own host, and serves agents without any operator credential there.
func TestStandaloneGatewayEnrollsWithAJoinToken(t *testing.T) {
	e := gatewaytest.Start(t, "")
	ctx := context.Background()
	// With no operator credential on its host, the gateway cannot register
	// its resource: the operator does.
	if _, err := e.Operator.AddResource(ctx, "https://edge.bulkhead.test", nil); err != nil {
		t.Fatal(err)
	}
	tok, err := e.Operator.ComponentJoinToken(ctx, "gateway", "edge", 0)
	if err != nil {
		t.Fatal(err)
	}
	if tok.SPIFFEID != "spiffe://bulkhead.local/bulkhead/gateway/edge" {
		t.Fatalf("join token for %q", tok.SPIFFEID)
	}
	var dir string
	url, stop := standalone(t, e, func(sa *server.StandaloneGateway) { sa.JoinToken, dir = tok.Token, sa.Dir })
	src, err := svidfile.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if src.SVID.ID.String() != tok.SPIFFEID {
		t.Fatalf("enrolled as %s", src.SVID.ID)
	}
	_, c := e.Agent(t, "alpha", "reader")
	cs := connectRetrying(t, url+"/mcp/files", gatewaytest.AgentHTTPFor(c, "https://edge.bulkhead.test"))
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/x"}})
	if err != nil || gatewaytest.Text(res) != "contents of /srv/x" {
		t.Fatalf("call through the enrolled gateway: %v", err)
	}
	var issued bool
	for _, ev := range events(t, e.Env, audit.ActionSVIDIssue) {
		if ev.Target == tok.SPIFFEID && ev.Decision == audit.Allow && ev.Detail["via"] == "join_token" && ev.Actor.ID == tok.SPIFFEID {
			issued = true
		}
	}
	if !issued {
		t.Fatal("the gateway's enrollment is not on record")
	}
	stop()
}

// Attack stories around component join tokens: each refused, with nothing
// issued, and recorded.
func TestComponentJoinTokenAttacks(t *testing.T) {
	e := gatewaytest.Start(t, "")
	ctx := context.Background()
	certsOf := func(id string) int {
		n := 0
		for _, ev := range events(t, e.Env, audit.ActionSVIDIssue) {
			if ev.Target == id && ev.Decision == audit.Allow {
				n++
			}
		}
		return n
	}
	const edge = "spiffe://bulkhead.local/bulkhead/gateway/edge"

	// A compromised agent asks for a gateway's join token, to become a
	// gateway (which reads upstream secrets): refused.
	_, agent := e.Agent(t, "mallory", "reader")
	_, err := agent.ComponentJoinToken(ctx, "gateway", "edge", 0)
	if !client.IsCode(err, "forbidden") {
		t.Fatalf("agent asking for a gateway join token: %v, want forbidden", err)
	}

	// A stolen token used twice: the second enrollment is refused.
	tok, err := e.Operator.ComponentJoinToken(ctx, "gateway", "edge", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enroll(ctx, e.URL, tok.Token, filepath.Join(t.TempDir(), "first")); err != nil {
		t.Fatal(err)
	}
	_, err = client.Enroll(ctx, e.URL, tok.Token, filepath.Join(t.TempDir(), "replay"))
	if !client.IsCode(err, "unauthenticated") || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed gateway join token: %v", err)
	}
	last := lastEvent(t, e.Env, audit.ActionSVIDIssue)
	if last.Decision != audit.Deny || last.Target != edge || !strings.Contains(strings.Join(last.Reasons, ";"), "already used") {
		t.Fatalf("replay not recorded as a denial: %+v", last)
	}
	if n := certsOf(edge); n != 1 {
		t.Fatalf("%d certificates for the gateway after a replay, want 1", n)
	}

	// A gateway token with a CSR naming another identity (an operator, or
	// another gateway): refused, and the token stays usable.
	tok2, err := e.Operator.ComponentJoinToken(ctx, "gateway", "edge2", 0)
	if err != nil {
		t.Fatal(err)
	}
	hc := publicClient(t, e.Server.BundlePEM())
	for _, other := range []string{"spiffe://bulkhead.local/operator/admin", "spiffe://bulkhead.local/bulkhead/gateway/edge"} {
		csr := csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{uri(other)}})
		status, apiErr := post(t, hc, e.URL+"/v1/enroll", api.EnrollRequest{Token: tok2.Token, CSR: csr})
		if status != http.StatusBadRequest {
			t.Fatalf("CSR for %s with edge2's token: %d %+v", other, status, apiErr)
		}
	}
	if last := lastEvent(t, e.Env, audit.ActionSVIDIssue); last.Decision != audit.Deny || last.Target != "spiffe://bulkhead.local/bulkhead/gateway/edge2" {
		t.Fatalf("CSR for another identity not recorded as a denial: %+v", last)
	}
	if _, err := client.Enroll(ctx, e.URL, tok2.Token, filepath.Join(t.TempDir(), "edge2")); err != nil {
		t.Fatalf("the token after refused CSRs: %v", err)
	}
}
