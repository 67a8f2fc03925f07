package server_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/token"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey/tpmtest"
)

// tpmEK is the endorsement key hash of the TPM at spec.
func tpmEK(t *testing.T, spec string) string {
	t.Helper()
	tp, err := tpmkey.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EKHash()
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

// An operator pins agent "vault"'s TPM. The agent enrolls with its key
// inside that TPM; the SVID says so (and still passes go-spiffe's
// verifier), its token carries it, and a policy that sends tool calls of
// a sensitive server only from TPM-held keys allows vault and denies a
// software-keyed agent of the same role. A software enrollment of vault
// and one from a TPM it was not pinned to are refused and recorded;
// renewal with a new proof from the same TPM passes.
func TestTPMAttestedAgentAndPolicy(t *testing.T) {
	e := startGateway(t, "")
	ctx := context.Background()
	mine, other := tpmtest.Start(t), tpmtest.Start(t)

	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	files := append(live.Files, api.PolicyFile{Name: "tpm.cedar", Content: `@id("writes-need-a-tpm-key")
forbid (principal, action == Action::"call_tool", resource == Tool::"files/write_file")
unless { context.attestation.protection == "tpm" };`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}

	for _, n := range []string{"vault", "soft"} {
		if _, err := e.Operator.CreateAgent(ctx, n, 0, "mcp"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Operator.AddAgentRole(ctx, n, "admin"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Operator.SetAgentTPM(ctx, "vault", tpmEK(t, mine.Spec)); err != nil {
		t.Fatal(err)
	}
	join := func() string {
		tok, err := e.Operator.JoinToken(ctx, "vault", 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	dir := filepath.Join(t.TempDir(), "vault")

	// Attacks on enrollment: a software key, and another TPM.
	if _, err := client.Enroll(ctx, e.URL, join(), dir); err == nil || !strings.Contains(err.Error(), "must enroll with its TPM") {
		t.Fatalf("software enrollment of a TPM-pinned agent: %v", err)
	}
	if _, err := client.EnrollTPM(ctx, e.URL, join(), dir, other.Spec); err == nil || !strings.Contains(err.Error(), "not the one registered") {
		t.Fatalf("enrollment from another TPM: %v", err)
	}

	svid, err := client.EnrollTPM(ctx, e.URL, join(), dir, mine.Spec)
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	got := attestation.FromCertificate(leaf)
	if want := (attestation.Claims{Protection: attestation.TPM, Method: attestation.MethodEKPinned, EK: tpmEK(t, mine.Spec)}); got != want {
		t.Fatalf("SVID states %+v, want %+v", got, want)
	}
	cred, err := svidfile.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(cred.SVID.Certificates, x509bundle.FromX509Authorities(cred.SVID.ID.TrustDomain(), cred.Bundle.X509Authorities())); err != nil {
		t.Fatalf("go-spiffe refuses the attested SVID: %v", err)
	}
	if k, ok := cred.SVID.PrivateKey.(*tpmkey.Key); !ok {
		t.Fatalf("the saved key loads as %T, not a TPM key", cred.SVID.PrivateKey)
	} else if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	// The SVID's files are useless off the TPM: the key file is a blob
	// only that TPM can load.
	stolen := filepath.Join(t.TempDir(), "stolen")
	if err := os.CopyFS(stolen, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(stolen, svidfile.TPMKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stolen, svidfile.TPMKeyFile), []byte(strings.Replace(string(keyPEM), mine.Spec, other.Spec, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := svidfile.Load(stolen); err == nil {
		t.Fatal("another TPM loaded the agent's key")
	}
	vault := e.Client(dir)

	_, soft := e.Agent(t, "soft2", "admin")
	// And its token is bound to that key's certificate: presented over
	// another agent's mTLS, it is refused.
	vaultTok, err := vault.RequestToken(ctx, gatewaytest.Resource, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	base := client.NewHTTPClient(soft.Source(), client.AuthorizeGateways(spiffeid.RequireTrustDomainFromString("bulkhead.local"), ""))
	thief := &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{
		Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: vaultTok.AccessToken, TokenType: "Bearer"}), Base: base.Transport}}
	resp, err := thief.Post(e.GatewayURL+"/mcp/files", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a stolen TPM-bound token over another agent's mTLS: %s", resp.Status)
	}
	write := func(c *client.Client) error {
		cs := e.MCP(t, e.AgentHTTP(c), "files")
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": "/srv/out", "content": "x"}})
		if err == nil && res.IsError {
			err = errors.New(textOf(res))
		}
		return err
	}
	if err := write(vault); err != nil {
		t.Fatalf("the TPM-keyed agent's write: %v", err)
	}
	if err := write(soft); err == nil {
		t.Fatal("a software-keyed agent's write was allowed by a policy requiring a TPM key")
	}

	// Renewal: only with a new proof from the same TPM.
	if _, err := vault.Renew(ctx, t.TempDir()); err != nil {
		t.Fatalf("TPM renewal: %v", err)
	}

	evs := storedEvents(t, e.Server)
	var refusedEnroll, issued, allowedTPM, deniedSoft, tokens int
	for _, ev := range evs {
		switch {
		case ev.Action == audit.ActionSVIDIssue && ev.Decision == audit.Deny && strings.HasSuffix(ev.Target, "/agent/vault"):
			refusedEnroll++
		case ev.Action == audit.ActionSVIDIssue && ev.Detail["attestation"] == "tpm/tpm-ek-pinned":
			issued++
		case ev.Action == "gateway.call_tool" && ev.Detail["attestation"] == "tpm/tpm-ek-pinned" && ev.Decision == audit.Allow:
			allowedTPM++
		case ev.Action == "gateway.call_tool" && ev.Decision == audit.Deny && slices.ContainsFunc(ev.Reasons, func(r string) bool { return strings.Contains(r, "writes-need-a-tpm-key") }):
			deniedSoft++
		case ev.Action == token.ActionTokenIssue && ev.Detail["attestation"] == "tpm/tpm-ek-pinned":
			tokens++
		}
	}
	if refusedEnroll < 2 || issued != 1 || allowedTPM == 0 || deniedSoft == 0 || tokens == 0 {
		t.Fatalf("records: refused enrollments %d, attested issuance %d, TPM calls allowed %d, software writes denied %d, attested tokens %d",
			refusedEnroll, issued, allowedTPM, deniedSoft, tokens)
	}
}

// enrollTPMAgent registers name with the TPM at spec pinned, enrolls it
// with its key in that TPM, and returns its credential directory.
func enrollTPMAgent(t *testing.T, e *gatewayEnv, name, role, spec string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Operator.CreateAgent(ctx, name, 0, "mcp"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Operator.AddAgentRole(ctx, name, role); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Operator.SetAgentTPM(ctx, name, tpmEK(t, spec)); err != nil {
		t.Fatal(err)
	}
	tok, err := e.Operator.JoinToken(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if _, err := client.EnrollTPM(ctx, e.URL, tok.Token, dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A TPM-attested agent delegates to seconds-lived sub-agents with software
// keys: its TPM key signs each child's enrollment, so the child's SVID and
// token state a lineage of depth 1 from that TPM. A policy that lets
// writes through only from a TPM key or a lineage at most one step from
// one allows the child, and denies a grandchild (depth 2) and the child of
// a software-keyed agent. A forged lineage proof is refused and recorded.
// Replacing the parent's TPM revokes its children: the lineage ends.
func TestAttestationLineageToSubAgents(t *testing.T) {
	e := startGateway(t, "")
	ctx := context.Background()
	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	files := append(live.Files, api.PolicyFile{Name: "lineage.cedar", Content: `@id("writes-need-attested-keys")
forbid (principal, action == Action::"call_tool", resource == Tool::"files/write_file")
unless { context.attestation.protection == "tpm" ||
         (context.attestation.method == "lineage" && context.attestation.lineage_depth <= 1) };`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	sw := tpmtest.Start(t)
	// swtpm serves one client at a time: read the EK before vault's
	// client holds the TPM.
	ek := tpmEK(t, sw.Spec)
	vault := e.Client(enrollTPMAgent(t, e, "vault", "admin", sw.Spec))
	_, soft := e.Agent(t, "soft", "admin")

	delegate := func(c *client.Client, name string, ttl time.Duration) (*client.SubAgent, string) {
		t.Helper()
		tok, err := c.RequestToken(ctx, gatewaytest.Resource, "mcp")
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), name)
		sub, err := c.Delegate(ctx, tok.AccessToken, client.DelegateOptions{Name: name, TTL: ttl, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return sub, dir
	}
	httpOf := func(sub *client.SubAgent) *http.Client {
		base := client.NewHTTPClient(sub.Source, client.AuthorizeGateways(spiffeid.RequireTrustDomainFromString("bulkhead.local"), ""))
		return &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{
			Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: sub.Token.AccessToken, TokenType: "Bearer"}), Base: base.Transport}}
	}
	write := func(sub *client.SubAgent) error {
		cs := e.MCP(t, httpOf(sub), "files")
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": "/srv/out", "content": "x"}})
		if err == nil && res.IsError {
			err = errors.New(textOf(res))
		}
		return err
	}

	child, childDir := delegate(vault, "worker", 2*time.Minute)
	svid, _ := child.Source.GetX509SVID()
	want := attestation.Claims{Protection: attestation.Software, Method: attestation.MethodLineage, EK: ek, Depth: 1}
	if got := attestation.FromCertificate(svid.Certificates[0]); got != want {
		t.Fatalf("child states %+v, want %+v", got, want)
	}
	if err := write(child); err != nil {
		t.Fatalf("the attested lineage's write: %v", err)
	}
	grandchild, _ := delegate(e.Client(childDir), "helper", 30*time.Second)
	if err := write(grandchild); err == nil {
		t.Fatal("a lineage of depth 2 passed a policy bounding it to 1")
	}
	softChild, _ := delegate(soft, "worker", 2*time.Minute)
	if err := write(softChild); err == nil {
		t.Fatal("the child of a software-keyed agent passed a policy requiring a lineage")
	}

	// A forged proof: the parent's statement signed by another key.
	tok, err := soft.RequestToken(ctx, gatewaytest.Resource, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := soft.Delegate(ctx, tok.AccessToken, client.DelegateOptions{LineageSigner: forgedSigner(t)}); err == nil || !strings.Contains(err.Error(), "lineage proof") {
		t.Fatalf("a forged lineage: %v", err)
	}
	refused := slices.ContainsFunc(storedEvents(t, e.Server, token.ActionTokenExchange), func(ev audit.Event) bool {
		return ev.Decision == audit.Deny && slices.ContainsFunc(ev.Reasons, func(r string) bool { return strings.Contains(r, "lineage proof") })
	})
	if !refused {
		t.Fatal("the forged lineage's refusal is not recorded")
	}

	// The parent's TPM is replaced: its children's lineage ends.
	other := sha256.Sum256([]byte("a new TPM"))
	if _, err := e.Operator.SetAgentTPM(ctx, "vault", attestation.EKHash(other[:])); err != nil {
		t.Fatal(err)
	}
	resp, err := httpOf(child).Post(e.GatewayURL+"/mcp/files", "application/json", strings.NewReader(`{}`))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a sub-agent of a replaced TPM still reaches the gateway: %s", resp.Status)
		}
	}
}

func forgedSigner(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
