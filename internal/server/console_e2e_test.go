package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/browsertest"
	"github.com/bulkhead-dev/bulkhead/internal/console"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// consoleURL is the console's origin: https://localhost:PORT.
func consoleURL(env *testenv.Env) string {
	_, port, _ := net.SplitHostPort(env.Server.Addr())
	return "https://localhost:" + port
}

// servingCert is the control plane's TLS certificate, which the browser is
// told to trust.
func servingCert(t *testing.T, env *testenv.Env) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", env.Server.Addr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reads the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// shot saves a screenshot for docs/console.md when BULKHEAD_CONSOLE_SHOTS
// names a directory (make console-shots).
func shot(t *testing.T, b *browsertest.Browser, name string) {
	t.Helper()
	dir := os.Getenv("BULKHEAD_CONSOLE_SHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	b.Screenshot(t, filepath.Join(dir, name+".png"))
}

// An operator registers a passkey through a one-time link and signs in to
// the console with it, in headless chromium with a virtual authenticator.
// The link does not work twice; an authenticator that does not verify its
// user cannot sign in; a page of another origin cannot post to the
// console; a request without the session's CSRF token is refused; an
// agent's certificate cannot open it. Each refusal is recorded.
func TestConsolePasskeySignIn(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	origin := consoleURL(env)
	link, err := env.Operator.PasskeyLink(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link.URL, origin+"/console/register#") {
		t.Fatalf("link %s is not on the console's origin %s", link.URL, origin)
	}
	b := browsertest.New(t, servingCert(t, env))

	b.Do(t, chromedp.Navigate(link.URL))
	shot(t, b, "register")
	b.Do(t, chromedp.Click("#register"))
	b.WaitFor(t, `document.getElementById("status").textContent.includes("registered")`)

	// The same link again: refused.
	b.Do(t, chromedp.Navigate(link.URL), chromedp.Click("#register"))
	b.WaitFor(t, `document.getElementById("status").textContent.includes("already used")`)

	// Sign-in without user verification. The browser itself refuses when
	// the page asks for it, so a tampered page asks for none: the control
	// plane refuses the assertion.
	b.SetUserVerified(t, false)
	b.Do(t, chromedp.Navigate(origin+"/console/login"))
	got := b.Eval(t, `(async () => {
		const o = (await post("/console/api/login/begin")).publicKey;
		o.userVerification = "discouraged";
		try { await post("/console/api/login/finish", await assertion(o)); return "signed in"; } catch (e) { return e.message; }
	})()`)
	if got == "signed in" || !strings.Contains(got, "verif") {
		t.Fatalf("a sign-in without user verification: %s", got)
	}
	b.SetUserVerified(t, true)

	b.Do(t, chromedp.Navigate(origin+"/console/login"))
	shot(t, b, "login")
	b.Do(t, chromedp.Click("#signin"))
	b.WaitFor(t, `location.pathname == "/console/" && document.getElementById("operator") != null`)
	shot(t, b, "overview")
	if got := b.Eval(t, `document.getElementById("operator").textContent`); got != link.Operator {
		t.Fatalf("signed in as %q, want %q", got, link.Operator)
	}

	// A signed-in request without the CSRF token: refused.
	status := b.Eval(t, `fetch("/console/api/logout", {method: "POST", credentials: "same-origin"}).then(r => String(r.status))`)
	if status != "403" {
		t.Fatalf("logout without the CSRF token: %s", status)
	}
	// Another origin posting to the console: refused.
	req, _ := http.NewRequest(http.MethodPost, env.URL+"/console/api/login/begin", strings.NewReader("{}"))
	req.Header.Set("Origin", "https://evil.example")
	resp, err := publicClient(t, env.Server.BundlePEM()).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin post: %s", resp.Status)
	}
	// An agent's certificate: refused.
	agent := env.Client(env.Enroll("alpha"))
	resp, err = agent.HTTPClient().Get(env.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an agent opening the console: %s", resp.Status)
	}

	// Signing out ends the session.
	b.Do(t, chromedp.Click("#signout"))
	b.WaitFor(t, `location.pathname == "/console/login"`)

	// The operator lists its passkey, then revokes it (a lost
	// authenticator): it signs in no more.
	keys, err := env.Operator.Passkeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].Revoked {
		t.Fatalf("passkeys: %+v %v", keys, err)
	}
	if err := env.Operator.RevokePasskeys(ctx); err != nil {
		t.Fatal(err)
	}
	if keys, err := env.Operator.Passkeys(ctx); err != nil || len(keys) != 1 || !keys[0].Revoked {
		t.Fatalf("passkeys after revoking: %+v %v", keys, err)
	}

	var regs, refusedRegs, signIns, refusedSignIns, refused int
	for _, ev := range storedEvents(t, env.Server) {
		switch {
		case ev.Action == console.ActionPasskeyRegister && ev.Decision == audit.Allow && ev.Actor.ID == link.Operator:
			regs++
		case ev.Action == console.ActionPasskeyRegister && ev.Decision == audit.Deny:
			refusedRegs++
		case ev.Action == console.ActionSignIn && ev.Decision == audit.Allow && ev.Actor.ID == link.Operator:
			signIns++
		case ev.Action == console.ActionSignIn && ev.Decision == audit.Deny:
			refusedSignIns++
		case ev.Action == console.ActionRefused:
			refused++
		}
	}
	if regs != 1 || refusedRegs != 1 || signIns != 1 || refusedSignIns != 1 || refused != 3 {
		t.Fatalf("records: registrations %d (refused %d), sign-ins %d (refused %d), other refusals %d; want 1 1 1 1 3",
			regs, refusedRegs, signIns, refusedSignIns, refused)
	}
}

// signedInConsole is the elevation story's control plane, gateway and
// manifest, with a browser signed in to the console as the bootstrap
// operator.
func signedInConsole(t *testing.T) (*elevEnv, *browsertest.Browser, string) {
	t.Helper()
	e := startElevation(t)
	b := browsertest.New(t, servingCert(t, e.Env.Env))
	signIn(t, b, e.Env.Env)
	return e, b, consoleURL(e.Env.Env)
}

// signIn registers a passkey for the bootstrap operator in b and signs in.
func signIn(t *testing.T, b *browsertest.Browser, env *testenv.Env) {
	t.Helper()
	signInAs(t, b, env, env.Operator)
}

// signInAs registers a passkey for op's operator in b and signs in.
func signInAs(t *testing.T, b *browsertest.Browser, env *testenv.Env, op *client.Client) {
	t.Helper()
	link, err := op.PasskeyLink(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b.Do(t, chromedp.Navigate(link.URL), chromedp.Click("#register"))
	b.WaitFor(t, `document.getElementById("status").textContent.includes("registered")`)
	b.Do(t, chromedp.Navigate(consoleURL(env)+"/console/login"), chromedp.Click("#signin"))
	b.WaitFor(t, `location.pathname == "/console/" && document.getElementById("operator") != null`)
}

// An agent asks for an elevation through its task; a human approves it in
// the console, confirming with a passkey; the elevated call passes, the
// task completes, and the call is denied again. The attacks on approval
// fail and are recorded: an assertion replayed onto another request, a
// confirmation without user verification, a request without the CSRF
// token, and the same human approving a two-person request twice.
func TestConsoleApprovalWithPasskey(t *testing.T) {
	e, b, origin := signedInConsole(t)
	ctx := context.Background()

	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	cs := e.session(alpha, task.ID)
	if _, err := write(cs, "/reports/weekly.md"); err == nil {
		t.Fatal("a write before any grant was allowed")
	}
	el := e.request(alpha, task.ID, "write-report")

	b.Do(t, chromedp.Navigate(origin+"/console/approvals"))
	b.WaitFor(t, `document.getElementById("req-`+el.ID+`") != null`)
	// What approving adds to alpha's reach: the write it asked for.
	if adds := b.Eval(t, `document.querySelector("#req-`+el.ID+` .adds").textContent`); !strings.Contains(adds, `call_tool Tool::"files/write_file"`) {
		t.Fatalf("the approval does not show what it grants: %q", adds)
	}
	shot(t, b, "approvals")
	b.Do(t, chromedp.SendKeys("#reason-"+el.ID, "the weekly report"),
		chromedp.Click(`#req-`+el.ID+` button[data-decision="approve"]`))
	b.WaitFor(t, `document.getElementById("status").textContent.includes(": active")`)
	if got, err := e.Operator.Elevation(ctx, el.ID); err != nil || got.Status != "active" {
		t.Fatalf("after the console's approval: %+v %v", got, err)
	}
	if _, err := write(cs, "/reports/weekly.md"); err != nil {
		t.Fatalf("the elevated call: %v", err)
	}
	if _, err := alpha.CompleteTask(ctx, task.ID, "report written"); err != nil {
		t.Fatal(err)
	}
	if _, err := write(cs, "/reports/weekly.md"); err == nil {
		t.Fatal("the call passed after the task completed")
	}

	// Two open requests for the attacks.
	task2 := e.start(alpha)
	a := e.request(alpha, task2.ID, "write-report")
	pub := e.request(alpha, task2.ID, "publish")
	b.Do(t, chromedp.Navigate(origin+"/console/approvals"))
	try := func(js string) string {
		t.Helper()
		return b.Eval(t, `(async () => { try { `+js+` } catch (e) { return e.message; } })()`)
	}
	// An assertion made for request a, posted as the approval of pub.
	if got := try(`const g = await post("/console/api/approvals/` + a.ID + `/begin", {decision: "approve", reason: ""});
		await post("/console/api/approvals/` + pub.ID + `/finish", await assertion(g.publicKey)); return "accepted";`); !strings.Contains(got, "not "+pub.ID) {
		t.Fatalf("an assertion replayed onto another request: %s", got)
	}
	// No user verification, from a tampered page.
	b.SetUserVerified(t, false)
	if got := try(`const g = await post("/console/api/approvals/` + a.ID + `/begin", {decision: "approve", reason: ""});
		g.publicKey.userVerification = "discouraged";
		await post("/console/api/approvals/` + a.ID + `/finish", await assertion(g.publicKey)); return "accepted";`); !strings.Contains(got, "verif") {
		t.Fatalf("an approval without user verification: %s", got)
	}
	b.SetUserVerified(t, true)
	// No CSRF token.
	if got := try(`const r = await fetch("/console/api/approvals/` + a.ID + `/begin", {method: "POST", credentials: "same-origin", body: "{}"}); return String(r.status);`); got != "403" {
		t.Fatalf("an approval without the CSRF token: %s", got)
	}
	// The same human twice on a two-person request.
	approve := `const g = await post("/console/api/approvals/` + pub.ID + `/begin", {decision: "approve", reason: "ok"});
		const d = await post("/console/api/approvals/` + pub.ID + `/finish", await assertion(g.publicKey)); return d.status + " " + d.approvals;`
	if got := try(approve); got != "pending 1" {
		t.Fatalf("the first of two approvals: %s", got)
	}
	if got := try(approve); !strings.Contains(got, "another human must approve") {
		t.Fatalf("the same human approving twice: %s", got)
	}
	for _, id := range []string{a.ID, pub.ID} {
		if got, err := e.Operator.Elevation(ctx, id); err != nil || got.Status != "pending" {
			t.Fatalf("request %s after the attacks: %+v %v", id, got, err)
		}
	}

	var confirmed, refused int
	for _, ev := range storedEvents(t, e.Server) {
		switch {
		case ev.Action == console.ActionDecide && ev.Decision == audit.Allow:
			confirmed++
		case ev.Action == console.ActionDecide && ev.Decision == audit.Deny:
			refused++
		}
	}
	// Confirmed: the approval, and the two-person request's two tries (the
	// elevation service refuses the second and records that itself).
	if confirmed != 3 || refused != 2 {
		t.Fatalf("records: %d confirmed decisions, %d refused; want 3 and 2", confirmed, refused)
	}
}

// The console's views, signed in: live decisions arrive as the gateway
// makes them, the audit search finds an agent's denials and the log
// verifies against a signed checkpoint, the agents page disables an agent
// (recorded as the human), and the policies page shows the live version.
func TestConsoleViews(t *testing.T) {
	e, b, origin := signedInConsole(t)
	ctx := context.Background()
	_, alpha := e.Agent(t, "alpha", "reader")
	cs := e.MCP(t, e.AgentHTTP(alpha), "files")

	b.Do(t, chromedp.Navigate(origin+"/console/decisions"))
	// The page follows the stream from its start: decisions made before
	// and after it opened both show.
	if _, err := write(cs, "/srv/out"); err == nil {
		t.Fatal("a reader's write was allowed")
	}
	b.WaitFor(t, `[...document.querySelectorAll("#decisions tbody tr.deny")].some(r => r.textContent.includes("write_file"))`)
	shot(t, b, "decisions")

	b.Do(t, chromedp.Navigate(origin+"/console/audit?agent=alpha&decision=deny"))
	b.WaitFor(t, `document.querySelector("#results tbody tr.deny") != null`)
	if rows := b.Eval(t, `String(document.querySelectorAll("#results tbody tr").length)`); rows == "0" {
		t.Fatal("the search found none of alpha's denials")
	}
	if _, err := e.Server.Checkpointer().Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	b.Do(t, chromedp.Click("#verify"))
	b.WaitFor(t, `document.getElementById("verified").textContent.startsWith("ok:")`)
	shot(t, b, "audit")

	// A second policy version, applied as a shadow candidate: the page
	// shows the change and what the candidate would decide differently.
	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	files := append(live.Files, api.PolicyFile{Name: "no-reads.cedar",
		Content: "@id(\"no-reads\")\nforbid (principal, action == Action::\"call_tool\", resource == Tool::\"files/read_file\");\n"})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files, Shadow: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/docs/guide.md"}}); err != nil {
		t.Fatalf("a read the live set allows: %v", err)
	}
	b.Do(t, chromedp.Navigate(origin+"/console/policies?from=1&to=2"))
	b.WaitFor(t, `document.getElementById("live").textContent == "1" && document.getElementById("diff").textContent.includes("no-reads.cedar")`)
	if got := b.Eval(t, `document.getElementById("shadow").textContent`); !strings.HasPrefix(got, "1 decision(s) the candidate would deny") {
		t.Fatalf("shadow report: %q", got)
	}
	shot(t, b, "policies")

	b.Do(t, chromedp.Navigate(origin+"/console/agents/alpha"))
	b.WaitFor(t, `document.getElementById("roles").textContent.includes("reader") && document.querySelectorAll("#certs tbody tr").length == 1`)
	shot(t, b, "agent")

	b.Do(t, chromedp.Navigate(origin+"/console/assess"))
	b.WaitFor(t, `document.querySelector("table") != null && document.body.innerText.includes("identity")`)
	shot(t, b, "assess")
	b.Do(t, chromedp.Navigate(origin+"/console/blast-radius?agent=alpha"))
	b.WaitFor(t, `document.body.innerText.includes("files/read_file")`)
	shot(t, b, "blast-radius")

	b.Do(t, chromedp.Navigate(origin+"/console/agents"))
	shot(t, b, "agents")
	// The confirmation dialog is the human's; the test answers yes.
	b.Eval(t, `(window.confirm = () => true, "ok")`)
	b.Do(t, chromedp.Click(`#agent-alpha button[data-action="disable"]`))
	b.WaitFor(t, `document.querySelector("#agent-alpha .status").textContent == "disabled"`)
	a, err := e.Operator.GetAgent(ctx, "alpha")
	if err != nil || a.Status != "disabled" {
		t.Fatalf("alpha after the console disabled it: %+v %v", a, err)
	}
	found := false
	for _, ev := range storedEvents(t, e.Server) {
		if ev.Action == audit.ActionAgentDisable && ev.Actor.ID == "spiffe://bulkhead.local/operator/admin" {
			found = true
		}
	}
	if !found {
		t.Fatal("the console's disable is not recorded as the human's")
	}
}

// A revoked operator's passkeys stop working with its certificates: its
// open session ends at its next request and it cannot sign in again.
func TestConsoleRevokedOperatorIsSignedOut(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "bob")
	if _, err := env.Operator.IssueOperatorSVID(ctx, "bob", dir, 0); err != nil {
		t.Fatal(err)
	}
	b := browsertest.New(t, servingCert(t, env))
	signInAs(t, b, env, env.Client(dir))
	if got := b.Eval(t, `document.getElementById("operator").textContent`); got != "spiffe://bulkhead.local/operator/bob" {
		t.Fatalf("signed in as %q", got)
	}
	if _, err := env.Operator.RevokeOperator(ctx, "bob", "left the team"); err != nil {
		t.Fatal(err)
	}
	origin := consoleURL(env)
	b.Do(t, chromedp.Navigate(origin+"/console/"))
	b.WaitFor(t, `location.pathname == "/console/login"`)
	b.Do(t, chromedp.Click("#signin"))
	b.WaitFor(t, `document.getElementById("status").className == "error"`)
	revoked, refused := false, false
	for _, ev := range storedEvents(t, env.Server) {
		revoked = revoked || ev.Action == console.ActionPasskeyRevoke && ev.Target == "spiffe://bulkhead.local/operator/bob" && ev.Decision == audit.Allow
		refused = refused || ev.Action == console.ActionSignIn && ev.Decision == audit.Deny && ev.Target == "spiffe://bulkhead.local/operator/bob"
	}
	if !revoked || !refused {
		t.Fatalf("records: passkeys revoked %v, sign-in refused %v", revoked, refused)
	}
}
