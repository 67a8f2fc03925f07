package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// withStdin runs f with os.Stdin reading input (cli.Main takes no stdin, and
// secret set reads the process's own).
func withStdin(t *testing.T, input string, f func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = w.WriteString(input)
		w.Close()
	}()
	old := os.Stdin
	os.Stdin = r
	defer func() {
		os.Stdin = old
		r.Close()
	}()
	f()
}

func TestSecretCommands(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	const value = "ghp_cli-test-value-51a2b7"
	var all strings.Builder // everything the CLI printed
	runIn := func(input string, args ...string) (int, string, string) {
		t.Helper()
		var (
			code     int
			out, err string
		)
		withStdin(t, input, func() { code, out, err = run(t, env, args...) })
		all.WriteString(out + err)
		return code, out, err
	}

	if code, out, errs := runIn(value+"\n", "secret", "set", "files-token"); code != 0 || out != "set secret files-token (version 1)\n" {
		t.Fatalf("set: exit %d, %q %q", code, out, errs)
	}
	// One trailing newline (LF or CRLF) is trimmed, no more.
	if code, out, errs := runIn(value+"\r\n", "secret", "set", "files-token"); code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("replace: exit %d, %q %q", code, out, errs)
	}
	// What a gateway reads back is exactly the value, without the newline.
	gwDir := filepath.Join(t.TempDir(), "gw")
	if _, err := srv.Operator.IssueComponentSVID(context.Background(), "gateway", "edge-1", gwDir); err != nil {
		t.Fatal(err)
	}
	gw := srv.Client(gwDir)
	if got, err := gw.RevealSecret(context.Background(), "files-token"); err != nil || string(got.Value) != value {
		t.Fatalf("gateway reads %q, %v; want the value without its newline", got.Value, err)
	}
	if code, _, errs := runIn("pem\n", "secret", "set", "raw", "--no-trim"); code != 0 {
		t.Fatalf("set --no-trim: %s", errs)
	}
	if got, err := gw.RevealSecret(context.Background(), "raw"); err != nil || string(got.Value) != "pem\n" {
		t.Fatalf("--no-trim stored %q, %v", got.Value, err)
	}
	if code, _, errs := runIn("", "secret", "rm", "raw"); code != 0 {
		t.Fatalf("rm raw: %s", errs)
	}

	for _, c := range []struct {
		name  string
		input string
		args  []string
		want  string
	}{
		{"empty value", "", []string{"secret", "set", "x"}, "the value is empty"},
		{"only a newline", "\n", []string{"secret", "set", "x"}, "the value is empty"},
		{"value as an argument", "", []string{"secret", "set", "x", value}, "accepts 1 arg"},
		{"bad name, checked before reading", value, []string{"secret", "set", "Not/A/Name"}, "secret name"},
		{"too large", strings.Repeat("v", 64<<10+1), []string{"secret", "set", "x"}, "over 65536 bytes"},
		{"no such secret", "", []string{"secret", "rm", "nope"}, "not found"},
	} {
		code, _, errs := runIn(c.input, c.args...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want %q", c.name, code, errs, c.want)
		}
	}

	code, out, errs := runIn("", "secret", "list", "--json")
	var list []api.Secret
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Name != "files-token" || list[0].Version != 2 {
		t.Fatalf("list --json: exit %d %q %q", code, out, errs)
	}
	if code, out, _ := runIn("", "secret", "list"); code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "files-token") {
		t.Fatalf("list: %q", out)
	}
	if code, out, errs := runIn("", "secret", "rm", "files-token"); code != 0 || out != "deleted secret files-token\n" {
		t.Fatalf("rm: exit %d %q %q", code, out, errs)
	}
	if code, out, _ := runIn("", "secret", "list", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after rm: %q", out)
	}
	if strings.Contains(all.String(), value) {
		t.Fatal("the CLI printed a secret value")
	}
}
