package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/secret"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// syncLog is a slog destination the test reads after the server wrote it.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// loggedServer is a control plane whose every log line, at debug level,
// the test can read: testenv discards them.
type loggedServer struct {
	srv     *server.Server
	url     string
	dataDir string
	op      *client.Client
	logs    *syncLog
}

func startLogged(t *testing.T) *loggedServer {
	t.Helper()
	ls := &loggedServer{dataDir: t.TempDir(), logs: &syncLog{}}
	logger := slog.New(slog.NewJSONHandler(ls.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	cfg := server.Config{DataDir: ls.dataDir, Listen: "127.0.0.1:0", TrustDomain: spiffeid.RequireTrustDomainFromString(server.DefaultTrustDomain)}
	srv, err := server.New(ctx, cfg, clock.Real{}, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("control plane exited: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("control plane did not stop")
		}
	})
	ls.srv, ls.url = srv, "https://"+srv.Addr()
	if ls.op, err = client.NewFromDir(ls.url, srv.OperatorDir()); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := ls.op.HTTPClient().Get(ls.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ls
}

func (ls *loggedServer) enroll(t *testing.T, name string) *client.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := ls.op.CreateAgent(ctx, name, 0); err != nil {
		t.Fatal(err)
	}
	tok, err := ls.op.JoinToken(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if _, err := client.Enroll(ctx, ls.url, tok.Token, dir); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewFromDir(ls.url, dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gateway issues a gateway SVID through the operator endpoint, the way a
// gateway on another machine is bootstrapped, and returns a client on it.
func issueGateway(t *testing.T, op *client.Client, url, name string) (*client.Client, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gateway-"+name)
	svid, err := op.IssueComponentSVID(context.Background(), "gateway", name, dir)
	if err != nil {
		t.Fatalf("issue gateway SVID: %v", err)
	}
	if want := "spiffe://bulkhead.local/bulkhead/gateway/" + name; svid.ID.String() != want {
		t.Fatalf("gateway SVID is for %s, want %s", svid.ID, want)
	}
	if !svidfile.Exists(dir) {
		t.Fatal("no SVID files written")
	}
	c, err := client.NewFromDir(url, dir)
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func storedEvents(t *testing.T, srv *server.Server, actions ...string) []audit.Event {
	t.Helper()
	rows, err := srv.Store().Events(context.Background(), audit.Query{AfterSeq: -1, Actions: actions})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]audit.Event, 0, len(rows))
	for _, r := range rows {
		ev, err := audit.Decode(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func randomValue(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte("sk-live-" + hex.EncodeToString(b))
}

// leakForms are the shapes in which a leaked value would show up.
func leakForms(v []byte) []string {
	return []string{string(v), base64.StdEncoding.EncodeToString(v), base64.RawURLEncoding.EncodeToString(v),
		hex.EncodeToString(v), audit.Digest(v)[len("sha256:"):]}
}

func assertAbsent(t *testing.T, where string, haystack []byte, values ...[]byte) {
	t.Helper()
	for _, v := range values {
		for _, f := range leakForms(v) {
			if bytes.Contains(haystack, []byte(f)) {
				t.Errorf("a secret value (as %q) appears in %s", f, where)
			}
		}
	}
}

// The issue's credential-injection promise, at the control plane: an
// operator sets a secret, a gateway (bootstrapped through the component
// endpoint) reads it, agents and operators cannot, and the value appears in
// no audit record, log line, listing, error message or database page.
func TestSecretsReachOnlyGatewaysAndNeverLeak(t *testing.T) {
	ls := startLogged(t)
	ctx := context.Background()
	v1, v2 := randomValue(t), randomValue(t)
	var seen bytes.Buffer // every response body and error message the test sees
	note := func(err error) error {
		if err != nil {
			seen.WriteString(err.Error() + "\n")
		}
		return err
	}

	set, err := ls.op.SetSecret(ctx, "files-token", v1)
	if note(err) != nil || set.Name != "files-token" || set.Version != 1 || set.UpdatedBy != "spiffe://bulkhead.local/operator/admin" {
		t.Fatalf("set = %+v, %v", set, err)
	}
	gw, gwDir := issueGateway(t, ls.op, ls.url, "edge-1")
	got, err := gw.RevealSecret(ctx, "files-token")
	if note(err) != nil || !bytes.Equal(got.Value, v1) || got.Version != 1 || got.Name != "files-token" {
		t.Fatalf("gateway reveal = %+v, %v", got, err)
	}

	// Replacing makes version 2; the gateway sees it, also after renewing
	// its SVID through the ordinary renewal endpoint.
	if set, err = ls.op.SetSecret(ctx, "files-token", v2); note(err) != nil || set.Version != 2 {
		t.Fatalf("replace = %+v, %v", set, err)
	}
	if _, err := gw.Renew(ctx, gwDir); note(err) != nil {
		t.Fatalf("gateway renewal: %v", err)
	}
	if got, err = gw.RevealSecret(ctx, "files-token"); note(err) != nil || !bytes.Equal(got.Value, v2) || got.Version != 2 {
		t.Fatalf("reveal after replace and renewal = %+v, %v", got, err)
	}

	// Agents and operators are refused at the edge, and the refusals are
	// evidence.
	agent := ls.enroll(t, "alpha")
	serverCred, err := client.NewFromDir(ls.url, filepath.Join(ls.dataDir, "server"))
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		who  string
		c    *client.Client
		call func(*client.Client) error
	}{
		{"agent reveal", agent, func(c *client.Client) error { _, err := c.RevealSecret(ctx, "files-token"); return err }},
		{"operator reveal", ls.op, func(c *client.Client) error { _, err := c.RevealSecret(ctx, "files-token"); return err }},
		{"control plane's own identity reveal", serverCred, func(c *client.Client) error { _, err := c.RevealSecret(ctx, "files-token"); return err }},
		{"agent list", agent, func(c *client.Client) error { _, err := c.ListSecrets(ctx); return err }},
		{"agent set", agent, func(c *client.Client) error { _, err := c.SetSecret(ctx, "files-token", []byte("x")); return err }},
		{"gateway list", gw, func(c *client.Client) error { _, err := c.ListSecrets(ctx); return err }},
		{"gateway set", gw, func(c *client.Client) error { _, err := c.SetSecret(ctx, "files-token", []byte("x")); return err }},
		{"gateway delete", gw, func(c *client.Client) error { return c.DeleteSecret(ctx, "files-token") }},
		{"agent component SVID", agent, func(c *client.Client) error {
			_, err := c.IssueComponentSVID(ctx, "gateway", "rogue", t.TempDir())
			return err
		}},
		{"gateway component SVID", gw, func(c *client.Client) error {
			_, err := c.IssueComponentSVID(ctx, "gateway", "rogue", t.TempDir())
			return err
		}},
	}
	for _, r := range refusals {
		if err := note(r.call(r.c)); !client.IsCode(err, "forbidden") {
			t.Errorf("%s: %v, want forbidden", r.who, err)
		}
	}
	refused := map[string]bool{}
	for _, ev := range storedEvents(t, ls.srv, audit.ActionAPIAccess, secret.ActionReveal) {
		if ev.Decision == audit.Deny && strings.Contains(ev.Target, "files-token") {
			refused[ev.Actor.ID] = true
		}
	}
	for _, id := range []string{"spiffe://bulkhead.local/agent/alpha", "spiffe://bulkhead.local/operator/admin", "spiffe://bulkhead.local/bulkhead/server"} {
		if !refused[id] {
			t.Errorf("no refusal recorded for %s", id)
		}
	}

	// Bad component requests.
	for _, c := range []struct{ kind, name, code string }{
		{"server", "x", "invalid_request"},
		{"gateway", "Bad_Name", "invalid_request"},
		{"connect", "x", "invalid_request"},
	} {
		if _, err := ls.op.IssueComponentSVID(ctx, c.kind, c.name, t.TempDir()); !client.IsCode(note(err), c.code) {
			t.Errorf("component %s/%s: %v, want %s", c.kind, c.name, err, c.code)
		}
	}

	// Bad secret requests carrying the value: the errors do not echo it.
	for _, c := range []struct {
		name  string
		value []byte
		code  string
	}{
		{"Not A Name", v2, "invalid_request"},
		{"big", append(bytes.Repeat([]byte("x"), secret.MaxValueSize), v2...), "too_large"},
		{"empty", nil, "invalid_request"},
	} {
		if _, err := ls.op.SetSecret(ctx, c.name, c.value); !client.IsCode(note(err), c.code) {
			t.Errorf("set %q: %v, want %s", c.name, err, c.code)
		}
	}
	if _, err := gw.RevealSecret(ctx, "nope"); !client.IsCode(note(err), "not_found") {
		t.Errorf("reveal missing: %v", err)
	}

	// The listing, raw, carries names and versions only.
	resp, err := ls.op.HTTPClient().Get(ls.url + "/v1/secrets")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	seen.Write(raw)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(raw, []byte(`"name":"files-token"`)) || !bytes.Contains(raw, []byte(`"version":2`)) ||
		bytes.Contains(raw, []byte(`"value"`)) {
		t.Fatalf("list: %d %s", resp.StatusCode, raw)
	}

	// The audit trail names the secret by reference only.
	var trail bytes.Buffer
	for _, ev := range storedEvents(t, ls.srv, secret.ActionSet, secret.ActionReveal, secret.ActionDelete) {
		if !strings.HasPrefix(ev.Target, "secret:") {
			t.Errorf("record targets %q", ev.Target)
		}
		if len(ev.Digests) != 0 {
			t.Errorf("record %s carries digests %v; a digest of a low-entropy secret can be guessed", ev.Action, ev.Digests)
		}
	}
	sets := storedEvents(t, ls.srv, secret.ActionSet)
	if len(sets) != 2 || sets[1].Detail["version"] != "2" || sets[1].Detail["replaces_version"] != "1" || sets[1].Actor.Kind != audit.ActorOperator {
		t.Errorf("set records = %+v", sets)
	}
	reveals := 0
	for _, ev := range storedEvents(t, ls.srv, secret.ActionReveal) {
		if ev.Decision == audit.Allow && ev.Actor.ID == "spiffe://bulkhead.local/bulkhead/gateway/edge-1" {
			reveals++
		}
	}
	if reveals != 2 {
		t.Errorf("%d allowed reveals recorded for the gateway, want 2", reveals)
	}
	var gwIssued []audit.Event
	for _, ev := range storedEvents(t, ls.srv, audit.ActionSVIDIssue) {
		if ev.Target == "spiffe://bulkhead.local/bulkhead/gateway/edge-1" {
			gwIssued = append(gwIssued, ev)
		}
	}
	if len(gwIssued) != 1 || gwIssued[0].Actor.Kind != audit.ActorOperator || gwIssued[0].Detail["via"] != "operator" || gwIssued[0].Decision != audit.Allow {
		t.Errorf("gateway issuance records = %+v", gwIssued)
	}

	// A value that does not open is logged by name, never by content.
	v3 := randomValue(t)
	if _, err := ls.op.SetSecret(ctx, "tamper-me", v3); note(err) != nil {
		t.Fatal(err)
	}
	if _, err := ls.srv.Store().SQL().Exec(`UPDATE secrets SET sealed = ? WHERE name = 'tamper-me'`, []byte("\x01garbage-garbage-garbage-garbage-garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.RevealSecret(ctx, "tamper-me"); !client.IsCode(note(err), "internal") {
		t.Fatalf("reveal of a tampered secret: %v", err)
	}
	if !bytes.Contains(ls.logs.Bytes(), []byte("secret:tamper-me")) {
		t.Error("the failure to open a secret is not logged with its name")
	}

	if err := note(ls.op.DeleteSecret(ctx, "files-token")); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.RevealSecret(ctx, "files-token"); !client.IsCode(note(err), "not_found") {
		t.Fatalf("reveal after delete: %v", err)
	}
	if err := ls.op.DeleteSecret(ctx, "files-token"); !client.IsCode(note(err), "not_found") {
		t.Fatalf("delete twice: %v", err)
	}

	rows, err := ls.srv.Store().Events(ctx, audit.Query{AfterSeq: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		trail.Write(r.Body)
		trail.WriteString(r.Target + r.ActorID + "\n")
	}
	assertAbsent(t, "the audit log", trail.Bytes(), v1, v2, v3)
	assertAbsent(t, "the server's logs", ls.logs.Bytes(), v1, v2, v3)
	assertAbsent(t, "API responses and error messages", seen.Bytes(), v1, v2, v3)
	// At rest: no page of the database (nor its WAL) holds a value.
	files, _ := filepath.Glob(filepath.Join(ls.dataDir, "bulkhead.db*"))
	if len(files) == 0 {
		t.Fatal("no database files found")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		assertAbsent(t, f, b, v1, v2, v3)
	}
	if len(ls.logs.Bytes()) == 0 {
		t.Fatal("captured no logs; the log check proves nothing")
	}
}

// A sealed value changed in the database does not open: the gateway gets an
// internal error (no value, no detail), and the log says which secret.
func TestTamperedSecretFailsClosed(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	value := randomValue(t)
	if _, err := env.Operator.SetSecret(ctx, "files-token", value); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Operator.SetSecret(ctx, "other", randomValue(t)); err != nil {
		t.Fatal(err)
	}
	gw, _ := issueGateway(t, env.Operator, env.URL, "edge-1")
	db := env.Server.Store().SQL()
	var sealed []byte
	if err := db.QueryRow(`SELECT sealed FROM secrets WHERE name = 'files-token'`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		sealed func() []byte
	}{
		{"flipped bit", func() []byte { b := bytes.Clone(sealed); b[len(b)/2] ^= 0x10; return b }},
		{"another secret's value", func() []byte {
			var b []byte
			if err := db.QueryRow(`SELECT sealed FROM secrets WHERE name = 'other'`).Scan(&b); err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"garbage", func() []byte { return []byte("not sealed at all") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := db.Exec(`UPDATE secrets SET sealed = ? WHERE name = 'files-token'`, c.sealed()); err != nil {
				t.Fatal(err)
			}
			got, err := gw.RevealSecret(ctx, "files-token")
			var apiErr *client.Error
			if !errors.As(err, &apiErr) || apiErr.Status != http.StatusInternalServerError || apiErr.Message != "internal error" || got.Value != nil {
				t.Fatalf("reveal of a tampered secret = %+v, %v", got, err)
			}
			evs := storedEvents(t, env.Server, secret.ActionReveal)
			if last := evs[len(evs)-1]; last.Decision != audit.Failed || last.Target != "secret:files-token" {
				t.Fatalf("last reveal record = %+v, want a failure", last)
			}
		})
	}
	// Put the original back: it opens again (the key was never the issue).
	if _, err := db.Exec(`UPDATE secrets SET sealed = ? WHERE name = 'files-token'`, sealed); err != nil {
		t.Fatal(err)
	}
	if got, err := gw.RevealSecret(ctx, "files-token"); err != nil || !bytes.Equal(got.Value, value) {
		t.Fatalf("restored value: %v", err)
	}
}

// If the audit log cannot be written, a secret is neither set, replaced,
// deleted nor revealed.
func TestSecretsRefusedWithoutAuditLog(t *testing.T) {
	env := testenv.Start(t) // SQLite: the trigger below is its syntax
	ctx := context.Background()
	if _, err := env.Operator.SetSecret(ctx, "kept", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	gw, _ := issueGateway(t, env.Operator, env.URL, "edge-1")
	db := env.Server.Store().SQL()
	if _, err := db.Exec(`CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit log down (test)'); END`); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"set", func() error { _, err := env.Operator.SetSecret(ctx, "new", []byte("v")); return err }},
		{"replace", func() error { _, err := env.Operator.SetSecret(ctx, "kept", []byte("v2")); return err }},
		{"delete", func() error { return env.Operator.DeleteSecret(ctx, "kept") }},
		{"reveal", func() error { _, err := gw.RevealSecret(ctx, "kept"); return err }},
		{"component SVID", func() error {
			_, err := env.Operator.IssueComponentSVID(ctx, "gateway", "edge-2", t.TempDir())
			return err
		}},
	}
	for _, c := range calls {
		if err := c.call(); !client.IsCode(err, "unavailable") {
			t.Errorf("%s without an audit log: %v, want unavailable", c.name, err)
		}
	}
	if _, err := db.Exec(`DROP TRIGGER audit_down`); err != nil {
		t.Fatal(err)
	}
	list, err := env.Operator.ListSecrets(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "kept" || list[0].Version != 1 {
		t.Fatalf("after refused changes: %+v, %v", list, err)
	}
	if got, err := gw.RevealSecret(ctx, "kept"); err != nil || string(got.Value) != "v1" {
		t.Fatalf("reveal once the log is back = %+v, %v", got, err)
	}
}

// Component SVIDs have a bounded lifetime.
func TestComponentSVIDLifetime(t *testing.T) {
	env := testenv.Start(t)
	_, dir := issueGateway(t, env.Operator, env.URL, "edge-1")
	cred, err := svidfile.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if life := cred.Leaf().NotAfter.Sub(cred.Leaf().NotBefore); life < 23*time.Hour || life > 25*time.Hour {
		t.Fatalf("gateway SVID lives %s, want about 24h", life)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	for _, c := range []struct {
		ttl    string
		status int
	}{
		{"48h", http.StatusOK},
		{"", http.StatusOK},
		{"169h", http.StatusBadRequest}, // over a week
		{"30s", http.StatusBadRequest},
		{"-1h", http.StatusBadRequest},
		{"forever", http.StatusBadRequest},
	} {
		body, _ := json.Marshal(api.ComponentSVIDRequest{CSR: csr, TTL: c.ttl})
		resp, err := env.Operator.HTTPClient().Post(env.URL+"/v1/components/gateway/edge-2/svid", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("ttl %q: %d %s, want %d", c.ttl, resp.StatusCode, b, c.status)
			continue
		}
		if c.ttl == "48h" {
			var out api.SVID
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatal(err)
			}
			if d := time.Until(out.ExpiresAt); d < 47*time.Hour || d > 49*time.Hour {
				t.Errorf("ttl 48h: expires in %s", d)
			}
		}
	}
}

// A gateway whose key may be stolen is revoked: it can no longer reveal
// secrets or renew.
func TestRevokedComponentLosesAccess(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	if _, err := env.Operator.SetSecret(ctx, "k", []byte("value-1234")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "gw")
	if _, err := env.Operator.IssueComponentSVID(ctx, "gateway", "edge", dir); err != nil {
		t.Fatal(err)
	}
	gw := env.Client(dir)
	if _, err := gw.RevealSecret(ctx, "k"); err != nil {
		t.Fatalf("reveal before revocation: %v", err)
	}
	res, err := env.Operator.RevokeComponent(ctx, "gateway", "edge", "key on a stolen laptop")
	if err != nil || len(res.Serials) != 1 {
		t.Fatalf("revoke component: %+v %v", res, err)
	}
	if _, err := gw.RevealSecret(ctx, "k"); !client.IsCode(err, "unauthenticated") {
		t.Fatalf("reveal after revocation: %v", err)
	}
	if _, err := gw.Renew(ctx, dir); err == nil {
		t.Fatal("a revoked gateway renewed its certificate")
	}
	if _, err := env.Operator.RevokeComponent(ctx, "server", "x", ""); !client.IsCode(err, "invalid_request") {
		t.Fatalf("revoke of a non-component kind: %v", err)
	}
}
