package server_test

import (
	"context"
	"crypto/x509"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca/hsmtest"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// `serve --ca-key pkcs11:...`: the control plane's CA, its token signing
// keys and the audit log's checkpoint key live in a PKCS#11 token. No private key of the CA is on
// disk or sealed in the store; an agent enrolls and its SVID passes
// go-spiffe's verifier; its access token is signed in the token; a
// restart signs with the same keys, found in the token.
func TestServeWithTheCAInAnHSM(t *testing.T) {
	u := hsmtest.Token(t)
	e := testenv.Start(t, testenv.WithConfig(func(c *server.Config) { c.CAKey = u.String() }))
	ctx := context.Background()
	var dir string
	enroll := func(name string) *x509.Certificate {
		dir = e.Enroll(name)
		src, err := client.LoadSource(dir)
		if err != nil {
			t.Fatal(err)
		}
		svid, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if id, _, err := x509svid.Verify(svid.Certificates, src, x509svid.WithTime(time.Now())); err != nil || !strings.HasSuffix(id.String(), "/agent/"+name) {
			t.Fatalf("%s's SVID: %v %v", name, id, err)
		}
		return src.Leaf()
	}
	first := enroll("alpha")
	var keys []string
	_ = filepath.WalkDir(e.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(d.Name(), "_key.pem") && strings.HasPrefix(p, filepath.Join(e.DataDir, "ca")) || d.Name() == audit.KeyFile) {
			keys = append(keys, p)
		}
		return nil
	})
	if len(keys) != 0 {
		t.Fatalf("CA or audit key files on disk: %v", keys)
	}
	for _, f := range []string{"ca/root_key.pem", "audit/" + audit.KeyFile} {
		if v, err := e.Server.Store().Meta(ctx, "sealed_file:"+f); err != nil || v != "" {
			t.Fatalf("%s is sealed in the store: %q %v", f, v, err)
		}
	}
	// The audit log's checkpoints are signed in the token, and verify
	// with the public key in DATA-DIR/audit.
	if _, err := e.Server.Checkpointer().Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI(e, "audit", "verify", "--no-progress"); code != 0 {
		t.Fatalf("audit verify: %d %s %s", code, out, errs)
	}
	// Access tokens are signed in the token too.
	if _, err := e.Operator.AddResource(ctx, "https://api.test", nil); err != nil {
		t.Fatal(err)
	}
	tok, err := e.Client(dir).RequestToken(ctx, "https://api.test")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := e.Server.Token().Verify(ctx, tok.AccessToken); err != nil || !strings.HasSuffix(c.Subject, "/agent/alpha") {
		t.Fatalf("a token signed in the HSM: %v %v", c, err)
	}
	e.Restart()
	second := enroll("beta")
	if string(first.AuthorityKeyId) != string(second.AuthorityKeyId) {
		t.Fatal("after the restart the CA signs with another key")
	}
}
