package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
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
	vault := e.Client(dir)

	_, soft := e.Agent(t, "soft2", "admin")
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
