package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// `bulkhead gateway join-token NAME` prints a token that enrolls exactly
// that gateway, once.
func TestGatewayJoinTokenCommand(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	code, out, errs := run(t, env, "gateway", "join-token", "edge", "--ttl", "5m", "--json")
	if code != 0 {
		t.Fatalf("join-token: exit %d: %s", code, errs)
	}
	var tok api.JoinToken
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" || tok.SPIFFEID != "spiffe://bulkhead.local/bulkhead/gateway/edge" {
		t.Fatalf("join-token printed %q (%v)", out, err)
	}
	svid, err := client.Enroll(context.Background(), srv.URL, tok.Token, filepath.Join(t.TempDir(), "edge"))
	if err != nil || svid.ID.String() != tok.SPIFFEID {
		t.Fatalf("enroll with the gateway token: %v %v", svid, err)
	}
	if code, _, errs := run(t, env, "gateway", "join-token", "bad/name"); code == 0 {
		t.Fatalf("join-token for an invalid name succeeded: %s", errs)
	}
}
