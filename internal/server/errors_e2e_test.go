package server_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// The store breaks under the public CRL endpoint (here: its certificates
// table is gone, as after a botched migration). Anyone may call GET
// /v1/crl, so the answer must say only what to do — 503, retry shortly —
// and never what broke: no SQL, no table names, no driver text. The
// operator finds the cause in the log, with the request it failed.
func TestCRLStoreFailureAnswersWithoutInternals(t *testing.T) {
	logs := &syncLog{}
	env := testenv.Start(t, testenv.WithLogger(slog.New(slog.NewTextHandler(logs, nil)))) // SQLite: the statement below is its syntax
	db := env.Server.Store().SQL()
	if _, err := db.Exec(`ALTER TABLE certificates RENAME TO certificates_away`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec(`ALTER TABLE certificates_away RENAME TO certificates`); err != nil {
			t.Errorf("restore the certificates table: %v", err)
		}
	})

	resp, err := publicClient(t, env.Server.BundlePEM()).Get(env.URL + "/v1/crl")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var e api.Error
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("body %q: %v", raw, err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || e.Code != "unavailable" || e.Message != "the service is temporarily unavailable; retry shortly" {
		t.Fatalf("got %d %+v, want 503 unavailable with the fixed text", resp.StatusCode, e)
	}
	for _, internal := range []string{"certificates", "no such table", "SQL", "store:", "sqlite"} {
		if strings.Contains(strings.ToLower(string(raw)), strings.ToLower(internal)) {
			t.Errorf("the answer leaks %q: %s", internal, raw)
		}
	}
	log := string(logs.Bytes())
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "path=/v1/crl") || !strings.Contains(log, "no such table: certificates") {
		t.Fatalf("the cause was not logged with the request:\n%s", log)
	}
}
