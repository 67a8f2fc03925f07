package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/cli"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// run executes the CLI with the given environment and returns exit code,
// stdout and stderr.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(context.Background(), args, &out, &errb, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	return code, out.String(), errb.String()
}

// mustRun returns a runner that fails the test when a command fails.
func mustRun(t *testing.T, env map[string]string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		code, out, errs := run(t, env, args...)
		if code != 0 {
			t.Fatalf("bulkhead %s: exit %d\n%s", strings.Join(args, " "), code, errs)
		}
		return out
	}
}

func TestAgentLifecycleThroughTheCLI(t *testing.T) {
	srv := testenv.Start(t)
	// Found through the environment, as an operator on another shell would.
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	must := mustRun(t, env)
	if out := must("agent", "create", "alpha", "--ttl", "2h"); !strings.Contains(out, "spiffe://bulkhead.local/agent/alpha") {
		t.Fatalf("create: %s", out)
	}
	var list []api.Agent
	if err := json.Unmarshal([]byte(must("agent", "list", "--json")), &list); err != nil || len(list) != 1 || list[0].SVIDTTL != "2h0m0s" {
		t.Fatalf("list --json: %v %+v", err, list)
	}
	if out := must("agent", "list"); !strings.Contains(out, "NAME") || !strings.Contains(out, "alpha") {
		t.Fatalf("list: %s", out)
	}
	token := strings.TrimSpace(must("agent", "join-token", "alpha", "--ttl", "5m"))
	if !strings.HasPrefix(token, "bhj1.") {
		t.Fatalf("join-token printed %q", token)
	}
	dir := filepath.Join(t.TempDir(), "alpha")
	if out := must("agent", "enroll", "--token", token, "--out", dir); !strings.Contains(out, "enrolled spiffe://bulkhead.local/agent/alpha") {
		t.Fatalf("enroll: %s", out)
	}
	if !svidfile.Exists(dir) {
		t.Fatal("enroll wrote no SVID")
	}
	code, _, errs := run(t, env, "agent", "enroll", "--token", token, "--out", t.TempDir())
	if code == 0 || !strings.Contains(errs, "already used") {
		t.Fatalf("reused token: exit %d %s", code, errs)
	}
	if out := must("agent", "renew", "--dir", dir, "--json"); !strings.Contains(out, `"spiffe_id": "spiffe://bulkhead.local/agent/alpha"`) {
		t.Fatalf("renew: %s", out)
	}
	var shown api.Agent
	if err := json.Unmarshal([]byte(must("agent", "show", "alpha", "--json")), &shown); err != nil || len(shown.Certificates) != 2 {
		t.Fatalf("show: %v %+v", err, shown)
	}
	if out := must("agent", "show", "alpha"); !strings.Contains(out, "SERIAL") {
		t.Fatalf("show: %s", out)
	}
	if out := must("agent", "disable", "alpha"); !strings.Contains(out, "disabled") {
		t.Fatalf("disable: %s", out)
	}
	must("agent", "enable", "alpha")
	if out := must("agent", "revoke", "alpha", "--reason", "test"); !strings.Contains(out, "2 certificate(s)") {
		t.Fatalf("revoke: %s", out)
	}
	code, _, errs = run(t, env, "agent", "renew", "--dir", dir)
	if code == 0 || !strings.Contains(errs, "revoked") {
		t.Fatalf("renew after revoke: exit %d, stderr %q", code, errs)
	}
}

func TestCLIErrorsAreClear(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"agent", "list", "--credentials", "/nonexistent"}, "no operator credential in /nonexistent"},
		{[]string{"agent", "enroll", "--out", "x"}, "--token is required"},
		{[]string{"agent", "create"}, "accepts 1 arg"},
		{[]string{"--log-level", "loud", "agent", "list"}, "--log-level"},
		{[]string{"agent", "list", "--server", "http://127.0.0.1:1", "--credentials", "."}, "no operator credential"},
	}
	for _, c := range cases {
		code, _, errs := run(t, nil, c.args...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("bulkhead %v: exit %d, stderr %q, want %q", c.args, code, errs, c.want)
		}
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, nil, "--config", cfg, "agent", "list"); code == 0 || !strings.Contains(errs, `unknown key "data_dir"`) {
		t.Errorf("config typo: exit %d %q", code, errs)
	}
}

// The README's first command: serve on the embedded default, then use it
// from the same directory with no settings at all.
func TestServeOnTheEmbeddedDefault(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "bulkhead-data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout bytes.Buffer
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, []string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"}, &stdout, stderr, func(string) (string, bool) { return "", false })
	}()
	ready := regexp.MustCompile(`url=(https://127\.0\.0\.1:\d+)`)
	var url string
	for deadline := time.Now().Add(15 * time.Second); url == ""; {
		if m := ready.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, f := range []string{"bulkhead.db", "ca/root.pem", "operator/svid.pem", "operator/svid_key.pem", "operator/svid_bundle.pem", "server/svid.pem"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("serve did not create %s: %v", f, err)
		}
	}
	env := map[string]string{"BULKHEAD_DATA_DIR": dataDir, "BULKHEAD_SERVER": url}
	if code, out, errs := run(t, env, "agent", "create", "alpha"); code != 0 || !strings.Contains(out, "alpha") {
		t.Fatalf("agent create against serve: %d %s %s", code, out, errs)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d on shutdown: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestTokenAndResourceCommands(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	must := mustRun(t, env)
	const gw = "https://gw.test"
	if out := must("resource", "add", gw, "--scope", "mcp", "--scope", "files:read"); !strings.Contains(out, "registered resource https://gw.test") {
		t.Fatalf("resource add: %s", out)
	}
	if out := must("resource", "list"); !strings.Contains(out, "mcp files:read") {
		t.Fatalf("resource list: %s", out)
	}
	must("agent", "create", "alpha", "--scope", "mcp")
	if out := must("agent", "scopes", "alpha", "mcp", "files:read"); !strings.Contains(out, "mcp files:read") {
		t.Fatalf("agent scopes: %s", out)
	}
	token := strings.TrimSpace(must("agent", "join-token", "alpha"))
	dir := filepath.Join(t.TempDir(), "alpha")
	must("agent", "enroll", "--token", token, "--out", dir)
	tok := strings.TrimSpace(must("token", "get", "--dir", dir, "--resource", gw, "--scope", "mcp"))
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token get printed %q", tok)
	}
	var inspected map[string]any
	if err := json.Unmarshal([]byte(must("token", "inspect", tok)), &inspected); err != nil || inspected["signature_valid"] != true {
		t.Fatalf("inspect: %v %v", err, inspected)
	}
	if claims, _ := inspected["claims"].(map[string]any); claims["sub"] != "spiffe://bulkhead.local/agent/alpha" || claims["scope"] != "mcp" {
		t.Fatalf("inspect claims: %v", inspected["claims"])
	}
	tampered := tok[:len(tok)-4] + "AAAA"
	if code, out, _ := run(t, env, "token", "inspect", tampered); code == 0 || !strings.Contains(out, `"signature_valid": false`) {
		t.Fatalf("inspect of a tampered token: exit %d %s", code, out)
	}
	subDir := filepath.Join(t.TempDir(), "sub")
	subTok := strings.TrimSpace(must("token", "delegate", "--dir", dir, "--resource", gw, "--out", subDir, "--scope", "mcp", "--name", "worker"))
	if !svidfile.Exists(subDir) || strings.Count(subTok, ".") != 2 {
		t.Fatal("delegate wrote no sub-agent")
	}
	if out := must("agent", "show", "alpha/sub/worker"); !strings.Contains(out, "parent:      alpha") {
		t.Fatalf("show sub-agent: %s", out)
	}
	if out := must("token", "revoke", "--dir", dir, tok); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %s", out)
	}
	must("resource", "remove", gw)
	if code, _, errs := run(t, env, "token", "get", "--dir", dir, "--resource", gw); code == 0 || !strings.Contains(errs, "not registered") {
		t.Fatalf("token for a removed resource: %d %s", code, errs)
	}
}

// The README's newcomer path: `bulkhead demo` runs end to end.
func TestDemo(t *testing.T) {
	code, out, errs := run(t, nil, "demo", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{
		"tools/list, filtered to what the agent may call: read_page, search",
		"Allowed: search(query=token)",
		"forbid-private-paths",
		"forbid-high-sensitivity",
		"first refused call",
		"ok: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
