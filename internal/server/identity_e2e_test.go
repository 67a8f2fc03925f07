package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

var td = spiffeid.RequireTrustDomainFromString("bulkhead.local")

// publicClient is a standard HTTPS client that trusts only the bundle in dir,
// like `curl --cacert svid_bundle.pem`.
func publicClient(t *testing.T, bundlePEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundlePEM) {
		t.Fatal("no certificates in bundle")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// events returns the committed audit events with the given action.
func events(t *testing.T, env *testenv.Env, action string) []audit.Event {
	t.Helper()
	rows, err := env.Server.Store().Events(context.Background(), audit.Query{AfterSeq: -1, Actions: []string{action}})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]audit.Event, 0, len(rows))
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func lastEvent(t *testing.T, env *testenv.Env, action string) audit.Event {
	t.Helper()
	evs := events(t, env, action)
	if len(evs) == 0 {
		t.Fatalf("no %s event recorded", action)
	}
	return evs[len(evs)-1]
}

func TestEnrolledSVIDVerifiesWithGoSPIFFEOpenSSLAndCurl(t *testing.T) {
	env := testenv.Start(t)
	dir := env.Enroll("alpha")
	bundlePEM := readFile(t, filepath.Join(dir, svidfile.BundleFile))

	// The public bundle endpoint, fetched by a standard TLS client that
	// trusts only svid_bundle.pem: the server's certificate chains to it and
	// is valid for its address.
	resp, err := publicClient(t, bundlePEM).Get(env.URL + "/v1/bundle")
	if err != nil {
		t.Fatalf("GET /v1/bundle with the bundle as the only root: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	bundle, err := spiffebundle.Parse(td, body)
	if err != nil {
		t.Fatalf("bundle is not in SPIFFE format: %v\n%s", err, body)
	}
	if seq, ok := bundle.SequenceNumber(); !ok || seq == 0 {
		t.Error("bundle has no spiffe_sequence")
	}
	if hint, ok := bundle.RefreshHint(); !ok || hint <= 0 {
		t.Error("bundle has no spiffe_refresh_hint")
	}
	var raw struct {
		Keys []struct {
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil || len(raw.Keys) != 1 || raw.Keys[0].Use != "x509-svid" {
		t.Errorf("bundle keys = %+v, want one with use x509-svid", raw.Keys)
	}

	svid, err := x509svid.Load(filepath.Join(dir, svidfile.CertFile), filepath.Join(dir, svidfile.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil {
		t.Fatalf("go-spiffe rejects the SVID: %v", err)
	}
	if want := spiffeid.RequireFromPath(td, "/agent/alpha"); id != want {
		t.Fatalf("SPIFFE ID = %s, want %s", id, want)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("SANs: URIs %v DNS %v IPs %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA=%v KeyUsage=%v, want a non-CA digitalSignature leaf", leaf.IsCA, leaf.KeyUsage)
	}
	if ttl := leaf.NotAfter.Sub(time.Now()); ttl < 55*time.Minute || ttl > time.Hour+time.Minute {
		t.Errorf("SVID lifetime left %s, want about the default 1h", ttl)
	}
	if st, _ := os.Stat(filepath.Join(dir, svidfile.KeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required under CI=true")
		}
		t.Log("openssl not installed; skipping the openssl check")
	} else {
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, svidfile.BundleFile),
			"-untrusted", filepath.Join(dir, svidfile.CertFile), filepath.Join(dir, svidfile.CertFile)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("openssl verify: %v\n%s", err, out)
		}
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-sS", "--fail", "--cacert", filepath.Join(dir, svidfile.BundleFile), env.URL+"/v1/bundle").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "x509-svid") {
			t.Fatalf("curl --cacert svid_bundle.pem %s/v1/bundle: %v\n%s", env.URL, err, out)
		}
	}

	ev := lastEvent(t, env, audit.ActionSVIDIssue)
	if ev.Actor.Kind != audit.ActorAgent || ev.Actor.ID != id.String() || ev.Decision != audit.Allow || ev.Detail["serial"] != ca.SerialHex(leaf) {
		t.Errorf("issuance record = %+v", ev)
	}
}

// post sends a JSON body to the public API and returns status and error body.
func post(t *testing.T, hc *http.Client, u string, body any) (int, api.Error) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	resp, err := hc.Post(u, "application/json", r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

func csrFor(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func uri(s string) *url.URL { u, _ := url.Parse(s); return u }

func TestJoinTokenWorksOnlyOnce(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	if _, err := env.Operator.CreateAgent(ctx, "alpha", 0); err != nil {
		t.Fatal(err)
	}
	tok, err := env.Operator.JoinToken(ctx, "alpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enroll(ctx, env.URL, tok.Token, filepath.Join(t.TempDir(), "a")); err != nil {
		t.Fatalf("first use: %v", err)
	}
	_, err = client.Enroll(ctx, env.URL, tok.Token, filepath.Join(t.TempDir(), "b"))
	if !client.IsCode(err, "unauthenticated") || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use: got %v, want unauthenticated: already used", err)
	}
	ev := lastEvent(t, env, audit.ActionSVIDIssue)
	if ev.Decision != audit.Deny || !strings.Contains(strings.Join(ev.Reasons, ";"), "already used") {
		t.Fatalf("replay not recorded as a denial: %+v", ev)
	}
	if a, _ := env.Operator.GetAgent(ctx, "alpha"); len(a.Certificates) != 1 {
		t.Fatalf("agent has %d certificates after a replayed token, want 1", len(a.Certificates))
	}
}

// Attack stories at enrollment: each is refused with a clear error, nothing
// is issued, the token stays usable where the token itself was fine, and the
// attempt is recorded.
func TestEnrollmentAttacks(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env := testenv.Start(t, testenv.WithClock(fake))
	ctx := context.Background()
	for _, n := range []string{"alpha", "beta", "gamma", "delta"} {
		if _, err := env.Operator.CreateAgent(ctx, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	token := func(name string) string {
		tok, err := env.Operator.JoinToken(ctx, name, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	hc := publicClient(t, env.Server.BundlePEM())
	// A refused CSR does not burn the token: the agent can retry properly.
	retry := token("delta")
	if status, _ := post(t, hc, env.URL+"/v1/enroll", api.EnrollRequest{Token: retry, CSR: "junk"}); status != 400 {
		t.Fatalf("junk CSR: %d", status)
	}
	if _, err := client.Enroll(ctx, env.URL, retry, filepath.Join(t.TempDir(), "delta")); err != nil {
		t.Fatalf("retry after a refused CSR: %v", err)
	}
	weakRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := csrFor(t, p256(t), &x509.CertificateRequest{})
	broken := []byte(good)
	broken[len(broken)/2] ^= 0x01

	cases := []struct {
		name     string
		body     any
		status   int
		msg      string
		recorded bool // a denial event names the reason
	}{
		{"CSR naming another agent", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://bulkhead.local/agent/beta")}})}
		}, 400, "CSR names spiffe://bulkhead.local/agent/beta", true},
		{"CSR naming an operator", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://bulkhead.local/operator/admin")}})}
		}, 400, "CSR names spiffe://bulkhead.local/operator/admin", true},
		{"CSR with an extra DNS SAN", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: csrFor(t, p256(t), &x509.CertificateRequest{DNSNames: []string{"evil.example"}})}
		}, 400, "only a SPIFFE URI SAN", true},
		{"CSR with two URI SANs", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{
				uri("spiffe://bulkhead.local/agent/alpha"), uri("spiffe://bulkhead.local/agent/beta")}})}
		}, 400, "2 URI SANs", true},
		{"weak RSA key", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: csrFor(t, weakRSA, &x509.CertificateRequest{})}
		}, 400, "too weak", true},
		{"unsupported curve", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: csrFor(t, p224, &x509.CertificateRequest{})}
		}, 400, "P-224", true},
		{"malformed CSR", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}
		}, 400, "bad certificate signing request", true},
		{"CSR with a broken signature", func() api.EnrollRequest {
			return api.EnrollRequest{Token: token("alpha"), CSR: string(broken)}
		}, 400, "bad certificate signing request", true},
		{"unknown token", func() api.EnrollRequest {
			tok := token("alpha")
			return api.EnrollRequest{Token: "bhj1." + strings.Repeat("A", 43) + tok[48:], CSR: good}
		}, 401, "unknown join token", true},
		{"not a token", api.EnrollRequest{Token: "let-me-in", CSR: good}, 400, "not a Bulkhead join token", true},
		{"expired token", func() api.EnrollRequest {
			tok := token("gamma")
			fake.Advance(2 * time.Minute)
			return api.EnrollRequest{Token: tok, CSR: good}
		}, 401, "join token expired", true},
		{"unknown JSON field", []byte(`{"token":"x","csr":"y","admin":true}`), 400, "unknown field", false},
		{"two JSON values", []byte(`{"token":"x","csr":"y"}{}`), 400, "more than one JSON value", false},
		{"oversized body", []byte(`{"token":"` + strings.Repeat("A", 64<<10) + `"}`), 413, "over", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := c.body
			if f, ok := body.(func() api.EnrollRequest); ok {
				body = f()
			}
			before := len(events(t, env, audit.ActionSVIDIssue))
			status, e := post(t, hc, env.URL+"/v1/enroll", body)
			if status != c.status || !strings.Contains(e.Message, c.msg) {
				t.Fatalf("got %d %q, want %d containing %q", status, e.Message, c.status, c.msg)
			}
			after := events(t, env, audit.ActionSVIDIssue)
			for _, ev := range after[before:] {
				if ev.Decision == audit.Allow {
					t.Fatalf("an attack produced an issuance: %+v", ev)
				}
			}
			if c.recorded {
				if len(after) != before+1 || after[len(after)-1].Decision != audit.Deny ||
					!strings.Contains(strings.Join(after[len(after)-1].Reasons, ";"), c.msg) {
					t.Fatalf("attempt not recorded as a denial with its reason: %+v", after[before:])
				}
			}
		})
	}
	for _, n := range []string{"alpha", "beta", "gamma"} {
		if a, _ := env.Operator.GetAgent(ctx, n); len(a.Certificates) != 0 {
			t.Errorf("agent %s got %d certificates from attacks", n, len(a.Certificates))
		}
	}
}

func TestDisabledAgentCannotEnroll(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	if _, err := env.Operator.CreateAgent(ctx, "alpha", 0); err != nil {
		t.Fatal(err)
	}
	tok, err := env.Operator.JoinToken(ctx, "alpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Operator.SetAgentEnabled(ctx, "alpha", false); err != nil {
		t.Fatal(err)
	}
	_, err = client.Enroll(ctx, env.URL, tok.Token, filepath.Join(t.TempDir(), "a"))
	if !client.IsCode(err, "forbidden") || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("enroll while disabled: %v", err)
	}
	if _, err := env.Operator.JoinToken(ctx, "alpha", 0); !client.IsCode(err, "conflict") {
		t.Fatalf("join token for a disabled agent: %v", err)
	}
}

func TestRenewRotatesKeyAndRevokeBlocksIt(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			env := testenv.Start(t, testenv.WithBackend(b))
			ctx := context.Background()
			dir := env.Enroll("alpha")
			agent := env.Client(dir)
			first := agent.Source().Leaf()

			svid, err := agent.Renew(ctx, dir)
			if err != nil {
				t.Fatalf("renew: %v", err)
			}
			second := svid.Certificates[0]
			if ca.SerialHex(second) == ca.SerialHex(first) || second.PublicKey.(*ecdsa.PublicKey).Equal(first.PublicKey) {
				t.Fatal("renewal did not produce a new certificate for a new key")
			}
			if onDisk, _ := svidfile.Load(dir); !onDisk.Leaf().Equal(second) {
				t.Fatal("renewed SVID not written to the directory")
			}
			renewEv := lastEvent(t, env, audit.ActionSVIDRenew)
			if renewEv.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || renewEv.Detail["previous_serial"] != ca.SerialHex(first) {
				t.Fatalf("renewal record = %+v", renewEv)
			}

			res, err := env.Operator.RevokeAgent(ctx, "alpha", "key leaked")
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Serials) != 2 {
				t.Fatalf("revoked %v, want both certificates", res.Serials)
			}
			_, err = env.Client(dir).Renew(ctx, dir)
			if err == nil || !strings.Contains(err.Error(), "revoked") {
				t.Fatalf("renewal after revoke: got %v, want a refusal that says revoked", err)
			}

			crl, err := env.Operator.CRL(ctx)
			if err != nil {
				t.Fatal(err)
			}
			listed := map[string]bool{}
			for _, e := range crl.RevokedCertificateEntries {
				listed[fmt.Sprintf("%x", e.SerialNumber)] = true
			}
			for _, c := range []*x509.Certificate{first, second} {
				if !listed[c.SerialNumber.Text(16)] {
					t.Errorf("serial %s not in the CRL", ca.SerialHex(c))
				}
			}

			rev := lastEvent(t, env, audit.ActionAgentRevoke)
			if rev.Actor.Kind != audit.ActorOperator || rev.Actor.ID != "spiffe://bulkhead.local/operator/admin" || rev.Reasons[0] != "key leaked" {
				t.Fatalf("revocation record = %+v", rev)
			}
			if n := len(events(t, env, audit.ActionSVIDRevoke)); n != 2 {
				t.Fatalf("%d per-certificate revocation records, want 2", n)
			}
			denied := lastEvent(t, env, audit.ActionAPIAccess)
			if denied.Decision != audit.Deny || denied.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
				t.Fatalf("refused renewal not recorded: %+v", denied)
			}

			// Re-admission: enable, new token, new enrollment.
			if _, err := env.Operator.SetAgentEnabled(ctx, "alpha", true); err != nil {
				t.Fatal(err)
			}
			tok, err := env.Operator.JoinToken(ctx, "alpha", 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Enroll(ctx, env.URL, tok.Token, dir); err != nil {
				t.Fatalf("re-enroll after enable: %v", err)
			}
		})
	}
}

func TestDisableBlocksRenewalUntilEnabled(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	dir := env.Enroll("alpha")
	if _, err := env.Operator.SetAgentEnabled(ctx, "alpha", false); err != nil {
		t.Fatal(err)
	}
	_, err := env.Client(dir).Renew(ctx, dir)
	if !client.IsCode(err, "forbidden") || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("renew while disabled: %v", err)
	}
	if _, err := env.Operator.SetAgentEnabled(ctx, "alpha", true); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client(dir).Renew(ctx, dir); err != nil {
		t.Fatalf("renew after enable: %v", err)
	}
}

func TestRenewalAttacks(t *testing.T) {
	env := testenv.Start(t)
	dir := env.Enroll("alpha")
	env.Enroll("beta")
	cred, err := svidfile.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	hc := env.Client(dir).HTTPClient()
	cases := []struct {
		name   string
		csr    string
		status int
		msg    string
	}{
		{"same key", csrFor(t, cred.SVID.PrivateKey, &x509.CertificateRequest{}), 400, "new key"},
		{"CSR naming another agent", csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://bulkhead.local/agent/beta")}}), 400, "CSR names spiffe://bulkhead.local/agent/beta"},
		{"CSR naming an operator", csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://bulkhead.local/operator/admin")}}), 400, "CSR names spiffe://bulkhead.local/operator/admin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, e := post(t, hc, env.URL+"/v1/svid/renew", api.RenewRequest{CSR: c.csr})
			if status != c.status || !strings.Contains(e.Message, c.msg) {
				t.Fatalf("got %d %q, want %d containing %q", status, e.Message, c.status, c.msg)
			}
			ev := lastEvent(t, env, audit.ActionSVIDRenew)
			if ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
				t.Fatalf("attempt not recorded: %+v", ev)
			}
		})
	}
	// No certificate was issued by any attempt.
	if a, _ := env.Operator.GetAgent(context.Background(), "alpha"); len(a.Certificates) != 1 {
		t.Fatalf("alpha has %d certificates", len(a.Certificates))
	}
	// Renewal without a client certificate is refused.
	status, _ := post(t, publicClient(t, env.Server.BundlePEM()), env.URL+"/v1/svid/renew", api.RenewRequest{CSR: cases[0].csr})
	if status != http.StatusUnauthorized {
		t.Fatalf("renewal without mTLS: %d", status)
	}
}

// A compromised agent renews with a CSR that asks to become a CA
// (keyCertSign and cRLSign, basicConstraints CA:true), hoping the CA copies
// what it is asked for so it can mint SVIDs for any identity. The CA never
// copies requested extensions, but silently dropping them would hide the
// attempt: it is refused, nothing is issued, and the refusal is on record
// with its reason.
func TestCompromisedAgentCannotRenewIntoACA(t *testing.T) {
	env := testenv.Start(t)
	dir := env.Enroll("alpha")
	hc := env.Client(dir).HTTPClient()
	keyUsage, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x86}, BitLength: 7}) // digitalSignature, keyCertSign, cRLSign
	if err != nil {
		t.Fatal(err)
	}
	caTrue, err := asn1.Marshal(struct {
		IsCA    bool `asn1:"optional"`
		PathLen int  `asn1:"optional"`
	}{true, 0})
	if err != nil {
		t.Fatal(err)
	}
	csr := csrFor(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://bulkhead.local/agent/alpha")},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: keyUsage},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caTrue},
		}})
	before := len(events(t, env, audit.ActionSVIDRenew))

	status, e := post(t, hc, env.URL+"/v1/svid/renew", api.RenewRequest{CSR: csr})
	const reason = "CSR requests key usage keyCertSign in keyUsage (2.5.29.15); Bulkhead sets only digitalSignature"
	if status != http.StatusBadRequest || e.Code != "invalid_request" || !strings.Contains(e.Message, reason) {
		t.Fatalf("got %d %s %q, want 400 invalid_request naming %q", status, e.Code, e.Message, reason)
	}
	after := events(t, env, audit.ActionSVIDRenew)
	if len(after) != before+1 {
		t.Fatalf("%d renewal records for one attempt", len(after)-before)
	}
	ev := after[len(after)-1]
	if ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || !strings.Contains(strings.Join(ev.Reasons, ";"), reason) {
		t.Fatalf("attempt not recorded as a denial with its reason: %+v", ev)
	}
	if a, _ := env.Operator.GetAgent(context.Background(), "alpha"); len(a.Certificates) != 1 {
		t.Fatalf("alpha has %d certificates after a refused renewal, want its enrollment's only", len(a.Certificates))
	}
}

// A compromised agent tries to act as an operator with its own SVID.
func TestAgentCannotCallOperatorAPI(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	dir := env.Enroll("alpha")
	agent := env.Client(dir)
	_, err := agent.CreateAgent(ctx, "evil", 0)
	if !client.IsCode(err, "forbidden") {
		t.Fatalf("agent created an agent: %v", err)
	}
	if _, err := agent.RevokeAgent(ctx, "alpha", "cover tracks"); !client.IsCode(err, "forbidden") {
		t.Fatalf("agent revoked: %v", err)
	}
	if _, err := agent.JoinToken(ctx, "alpha", 0); !client.IsCode(err, "forbidden") {
		t.Fatalf("agent minted a join token: %v", err)
	}
	evs := events(t, env, audit.ActionAPIAccess)
	if len(evs) != 3 {
		t.Fatalf("%d refusals recorded, want 3", len(evs))
	}
	for _, ev := range evs {
		if ev.Decision != audit.Deny || ev.Actor.Kind != audit.ActorAgent || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
			t.Fatalf("refusal record = %+v", ev)
		}
	}
	if _, err := env.Operator.GetAgent(ctx, "evil"); !client.IsCode(err, "not_found") {
		t.Fatalf("evil exists: %v", err)
	}
}

// A certificate from another trust domain's CA, even with a plausible
// operator ID, does not get through the handshake.
func TestForeignTrustDomainIsRefused(t *testing.T) {
	env := testenv.Start(t)
	other := testenv.Start(t, testenv.WithConfig(func(c *server.Config) {
		c.TrustDomain = spiffeid.RequireTrustDomainFromString("evil.example")
	}))
	foreign, err := tls.LoadX509KeyPair(filepath.Join(other.Server.OperatorDir(), svidfile.CertFile), filepath.Join(other.Server.OperatorDir(), svidfile.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.BundlePEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{foreign}}}}
	resp, err := hc.Get(env.URL + "/v1/agents")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a foreign certificate reached the API: %d", resp.StatusCode)
	}
	// The same holds for a certificate signed by a forged CA that claims
	// our trust domain.
	forgedDir := t.TempDir()
	forgedCA, _, err := ca.LoadOrCreate(ca.Config{TrustDomain: td, Dir: forgedDir, Clock: clock.Real{}})
	if err != nil {
		t.Fatal(err)
	}
	key := p256(t)
	leaf, err := forgedCA.SignSVID(ca.SVIDRequest{ID: spiffeid.RequireFromPath(td, "/operator/admin"), PublicKey: key.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	forged := tls.Certificate{Certificate: [][]byte{leaf.Raw, forgedCA.Intermediate().Raw}, PrivateKey: key}
	hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{forged}}}}
	resp, err = hc.Get(env.URL + "/v1/agents")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a forged operator certificate reached the API: %d", resp.StatusCode)
	}
}

func TestRestartKeepsTrustDomainAndCA(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	dir := env.Enroll("alpha")
	bundleBefore := env.Server.BundlePEM()
	opBefore := readFile(t, filepath.Join(env.Server.OperatorDir(), svidfile.CertFile))

	env.Restart()
	if !bytes.Equal(env.Server.BundlePEM(), bundleBefore) {
		t.Fatal("restart changed the trust bundle")
	}
	if !bytes.Equal(readFile(t, filepath.Join(env.Server.OperatorDir(), svidfile.CertFile)), opBefore) {
		t.Fatal("restart replaced a still-fresh operator credential")
	}
	cred, err := svidfile.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(cred.SVID.Certificates, cred.Bundle); err != nil {
		t.Fatalf("SVID issued before the restart no longer verifies: %v", err)
	}
	if _, err := env.Client(dir).Renew(ctx, dir); err != nil {
		t.Fatalf("renew after restart: %v", err)
	}
	if a, err := env.Operator.GetAgent(ctx, "alpha"); err != nil || len(a.Certificates) != 2 {
		t.Fatalf("agent after restart: %+v, %v", a, err)
	}

	// Restarting with another trust domain on the same data is refused.
	bad := env
	bad.Stop()
	_, err = server.New(ctx, server.Config{DataDir: env.DataDir, Listen: "127.0.0.1:0",
		TrustDomain: spiffeid.RequireTrustDomainFromString("other.example")}, clock.Real{}, storetest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "bulkhead.local") {
		t.Fatalf("start with another trust domain: %v", err)
	}
}

func TestOperatorCredentialIsRenewedWhenStale(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env := testenv.Start(t, testenv.WithClock(fake))
	before := readFile(t, filepath.Join(env.Server.OperatorDir(), svidfile.CertFile))
	fake.Advance(13 * time.Hour) // past half of the 24h operator TTL
	testenv.Await(t, 10*time.Second, "operator credential renewed after half-life", func() bool {
		return !bytes.Equal(readFile(t, filepath.Join(env.Server.OperatorDir(), svidfile.CertFile)), before)
	})
	if ev := lastEvent(t, env, audit.ActionOperatorIssue); ev.Actor.Kind != audit.ActorSystem {
		t.Fatalf("operator renewal record = %+v", ev)
	}
}

// The event stream lives no longer than the certificate it was opened
// with: a gateway then resumes it with its rotated SVID, authenticated
// again, and misses nothing (the stream is resumable).
func TestEventStreamEndsWithItsCertificate(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env := testenv.Start(t, testenv.WithClock(fake))
	dir := filepath.Join(t.TempDir(), "edge")
	if _, err := env.Operator.IssueComponentSVID(context.Background(), "gateway", "edge", dir); err != nil {
		t.Fatal(err)
	}
	gw := env.Client(dir)
	req, _ := http.NewRequest(http.MethodGet, env.URL+"/v1/events", nil)
	resp, err := (&http.Client{Transport: gw.HTTPClient().Transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	ended := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, resp.Body)
		close(ended)
	}()
	select {
	case <-ended:
		t.Fatal("the stream ended while its certificate was valid")
	case <-time.After(100 * time.Millisecond):
	}
	fake.Advance(gw.Source().Leaf().NotAfter.Sub(fake.Now()) + time.Second)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream outlived its certificate")
	}
}

func TestEventStreamDeliversRevocations(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env.Enroll("alpha")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/v1/events?action="+audit.ActionSVIDRevoke, nil)
	resp, err := env.Operator.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	res, err := env.Operator.RevokeAgent(ctx, "alpha", "test")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 1024)
	for !bytes.Contains(buf, []byte(res.Serials[0])) {
		n, err := resp.Body.Read(chunk)
		if err != nil {
			t.Fatalf("stream ended before the revocation arrived: %v (got %q)", err, buf)
		}
		buf = append(buf, chunk[:n]...)
	}
	if !bytes.Contains(buf, []byte("event: "+audit.ActionSVIDRevoke)) {
		t.Fatalf("unexpected stream: %s", buf)
	}
}

func TestPublicEndpointsNeedNoCertificateButAPIDoes(t *testing.T) {
	env := testenv.Start(t)
	hc := publicClient(t, env.Server.BundlePEM())
	for _, p := range []string{"/v1/bundle", "/v1/crl", "/healthz"} {
		resp, err := hc.Get(env.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a certificate: %d", p, resp.StatusCode)
		}
	}
	resp, err := hc.Get(env.URL + "/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/agents without a certificate: %d", resp.StatusCode)
	}
}

// An expired SVID cannot renew: the handshake refuses it (the server checks
// validity on its own clock), so the agent must enroll again.
// A compromised agent keeps a connection open past its SVID's expiry and
// tries to renew over it (the handshake, made while the SVID was valid,
// never runs again): refused, nothing issued, and recorded.
func TestExpiredSVIDOnAKeptConnectionIsRefused(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env := testenv.Start(t, testenv.WithClock(fake))
	dir := env.Enroll("alpha")
	c := env.Client(dir)
	ctx := context.Background()
	// Open the connection (it presents the SVID) while the SVID is valid.
	if _, err := c.Bundle(ctx); err != nil {
		t.Fatal(err)
	}
	fake.Advance(2 * time.Hour) // past the default 1h TTL
	_, err := c.Renew(ctx, dir)
	if !client.IsCode(err, "unauthenticated") || !strings.Contains(err.Error(), "not now") {
		t.Fatalf("renewal over a kept connection with an expired SVID: %v", err)
	}
	ev := lastEvent(t, env, audit.ActionAPIAccess)
	if ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || !strings.Contains(strings.Join(ev.Reasons, ";"), "not now") {
		t.Fatalf("refusal not recorded: %+v", ev)
	}
	if a, _ := env.Operator.GetAgent(ctx, "alpha"); len(a.Certificates) != 1 {
		t.Fatalf("%d certificates after a refused renewal", len(a.Certificates))
	}
}

func TestExpiredSVIDCannotRenew(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env := testenv.Start(t, testenv.WithClock(fake))
	dir := env.Enroll("alpha")
	fake.Advance(2 * time.Hour) // past the default 1h TTL
	_, err := env.Client(dir).Renew(context.Background(), dir)
	if err == nil {
		t.Fatal("an expired SVID renewed")
	}
	// The handshake refuses it: no API answer at all. (TLS 1.3 refuses a
	// client certificate after the client thinks the handshake is done,
	// so the client sees the alert, a closed connection, or an HTTP/2
	// connection that could not be established: the wording varies.)
	var api *client.Error
	if errors.As(err, &api) {
		t.Fatalf("the API answered an expired SVID (%v): the handshake should have refused it", err)
	}
	if a, _ := env.Operator.GetAgent(context.Background(), "alpha"); len(a.Certificates) != 1 {
		t.Fatalf("%d certificates after a refused renewal", len(a.Certificates))
	}
}
