package server_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

type oauthResult struct {
	status int
	code   string
	desc   string
}

func postOAuth(t *testing.T, hc *http.Client, u string, contentType, body string, header http.Header) oauthResult {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
		Desc  string `json:"error_description"`
	}
	_ = json.Unmarshal(b, &e)
	return oauthResult{resp.StatusCode, e.Error, e.Desc}
}

// forge re-signs the claims of a real token with alg none or HMAC, the
// classic JWT forgeries.
func forge(t *testing.T, real string, alg string) string {
	t.Helper()
	parts := strings.Split(real, ".")
	switch alg {
	case "none":
		hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`))
		return hdr + "." + parts[1] + "."
	case "HS256":
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("a-guessable-shared-secret-32byte")},
			(&jose.SignerOptions{}).WithType("at+jwt"))
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := jws.CompactSerialize()
		return s
	}
	t.Fatalf("unknown alg %s", alg)
	return ""
}

// Attack stories at the token endpoint: each is refused with the RFC 6749
// error that says why, nothing is issued, and the attempt is recorded.
func TestTokenEndpointAttacks(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env, dir := tokenEnv(t, testenv.WithClock(fake))
	ctx := context.Background()
	alpha := env.Client(dir)
	betaDir := enrollWithScopes(t, env, "beta", "mcp")
	beta := env.Client(betaDir)
	alphaTok, err := alpha.RequestToken(ctx, gw, "mcp", "files:read")
	if err != nil {
		t.Fatal(err)
	}
	// A token that expires, one that is revoked, one from another control
	// plane, and one bound to a certificate alpha no longer uses.
	shortTok, err := alpha.RequestToken(ctx, gw, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	revokedTok, err := alpha.RequestToken(ctx, gw, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	if err := alpha.RevokeToken(ctx, revokedTok.AccessToken, "test"); err != nil {
		t.Fatal(err)
	}
	otherEnv, otherDir := tokenEnv(t)
	foreignTok, err := otherEnv.Client(otherDir).RequestToken(ctx, gw, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	staleDir := enrollWithScopes(t, env, "gamma", "mcp")
	gamma := env.Client(staleDir)
	staleTok, err := gamma.RequestToken(ctx, gw, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gamma.Renew(ctx, staleDir); err != nil { // new certificate; staleTok is bound to the old one
		t.Fatal(err)
	}
	csr := csrFor(t, p256(t), &x509.CertificateRequest{})

	exchange := func(subject string, extra url.Values) string {
		v := url.Values{"grant_type": {token.GrantTokenExchange}, "subject_token": {subject},
			"subject_token_type": {token.TypeAccessToken}, "csr": {csr}}
		for k, vs := range extra {
			v[k] = vs
		}
		return v.Encode()
	}
	form := "application/x-www-form-urlencoded"
	cc := url.Values{"grant_type": {"client_credentials"}, "resource": {gw}}
	with := func(v url.Values, k, val string) string {
		c := url.Values{}
		for kk, vv := range v {
			c[kk] = vv
		}
		c.Set(k, val)
		return c.Encode()
	}
	cases := []struct {
		name   string
		hc     *http.Client
		ctype  string
		body   string
		header http.Header
		before func()
		status int
		code   string
		desc   string
	}{
		{name: "alg none subject token", hc: alpha.HTTPClient(), body: exchange(forge(t, alphaTok.AccessToken, "none"), nil), status: 400, code: "invalid_grant", desc: "not a valid Bulkhead access token"},
		{name: "HMAC-signed subject token", hc: alpha.HTTPClient(), body: exchange(forge(t, alphaTok.AccessToken, "HS256"), nil), status: 400, code: "invalid_grant", desc: "not a valid Bulkhead access token"},
		{name: "token bound to another certificate", hc: gamma.HTTPClient(), body: exchange(staleTok.AccessToken, nil), status: 400, code: "invalid_grant", desc: "bound to another certificate"},
		{name: "another agent's (stolen) token", hc: beta.HTTPClient(), body: exchange(alphaTok.AccessToken, nil), status: 400, code: "invalid_grant", desc: "belongs to spiffe://bulkhead.local/agent/alpha"},
		{name: "revoked token", hc: alpha.HTTPClient(), body: exchange(revokedTok.AccessToken, nil), status: 400, code: "invalid_grant", desc: "revoked"},
		{name: "foreign issuer token", hc: alpha.HTTPClient(), body: exchange(foreignTok.AccessToken, nil), status: 400, code: "invalid_grant", desc: "unknown signing key"},
		{name: "scope escalation in exchange", hc: alpha.HTTPClient(), body: exchange(alphaTok.AccessToken, url.Values{"scope": {"mcp admin"}}), status: 400, code: "invalid_scope", desc: "admin"},
		{name: "TTL extension in exchange", hc: alpha.HTTPClient(), body: exchange(alphaTok.AccessToken, url.Values{"requested_expires_in": {"900"}}), status: 400, code: "invalid_request", desc: "outlive the parent"},
		{name: "exchange for a named subject", hc: alpha.HTTPClient(), body: exchange(alphaTok.AccessToken, url.Values{"requested_subject": {"spiffe://bulkhead.local/agent/beta"}}), status: 400, code: "invalid_request", desc: "not supported"},
		{name: "sub-agent name escaping its parent", hc: alpha.HTTPClient(), body: exchange(alphaTok.AccessToken, url.Values{"sub_agent": {"../beta"}}), status: 400, code: "invalid_request", desc: "must be"},
		{name: "audience change in exchange", hc: alpha.HTTPClient(), body: exchange(alphaTok.AccessToken, url.Values{"resource": {"https://elsewhere.test"}}), status: 400, code: "invalid_target", desc: "parent's"},
		{name: "expired token", hc: alpha.HTTPClient(), before: func() { fake.Advance(6 * time.Minute) }, body: exchange(shortTok.AccessToken, nil), status: 400, code: "invalid_grant", desc: "expired"},
		{name: "client_secret_basic", hc: publicClient(t, env.Server.BundlePEM()), body: cc.Encode(), header: http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("alpha:hunter2"))}}, status: 401, code: "invalid_client", desc: "no client secrets"},
		{name: "client_secret_post", hc: publicClient(t, env.Server.BundlePEM()), body: with(cc, "client_secret", "hunter2"), status: 401, code: "invalid_client", desc: "no client secrets"},
		{name: "no client authentication", hc: publicClient(t, env.Server.BundlePEM()), body: cc.Encode(), status: 401, code: "invalid_client", desc: "no client authentication"},
		{name: "client_id of another agent", hc: alpha.HTTPClient(), body: with(cc, "client_id", "spiffe://bulkhead.local/agent/beta"), status: 401, code: "invalid_client", desc: "does not match"},
		{name: "scope beyond registration", hc: beta.HTTPClient(), body: with(cc, "scope", "mcp admin"), status: 400, code: "invalid_scope", desc: "admin"},
		{name: "unregistered resource", hc: alpha.HTTPClient(), body: with(cc, "resource", "https://evil.test"), status: 400, code: "invalid_target", desc: "not registered"},
		{name: "no resource", hc: alpha.HTTPClient(), body: "grant_type=client_credentials", status: 400, code: "invalid_target", desc: "resource is required"},
		{name: "over-long lifetime", hc: alpha.HTTPClient(), body: with(cc, "requested_expires_in", "3600"), status: 400, code: "invalid_request", desc: "requested_expires_in"},
		{name: "unknown grant", hc: alpha.HTTPClient(), body: with(cc, "grant_type", "password"), status: 400, code: "unsupported_grant_type", desc: "password"},
		{name: "JSON body", hc: alpha.HTTPClient(), ctype: "application/json", body: `{"grant_type":"client_credentials"}`, status: 400, code: "invalid_request", desc: "x-www-form-urlencoded"},
		{name: "repeated parameter", hc: alpha.HTTPClient(), body: cc.Encode() + "&scope=mcp&scope=admin", status: 400, code: "invalid_request", desc: "repeated"},
		{name: "malformed form", hc: alpha.HTTPClient(), body: "grant_type=%zz", status: 400, code: "invalid_request", desc: "malformed"},
		{name: "oversized body", hc: alpha.HTTPClient(), body: cc.Encode() + "&pad=" + strings.Repeat("A", 70<<10), status: 400, code: "invalid_request", desc: "over"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before()
			}
			ctype := c.ctype
			if ctype == "" {
				ctype = form
			}
			issuedBefore := countDecisions(t, env, audit.Allow)
			deniedBefore := countDecisions(t, env, audit.Deny)
			got := postOAuth(t, c.hc, env.URL+token.TokenPath, ctype, c.body, c.header)
			if got.status != c.status || got.code != c.code || !strings.Contains(got.desc, c.desc) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", got.status, got.code, got.desc, c.status, c.code, c.desc)
			}
			if n := countDecisions(t, env, audit.Allow); n != issuedBefore {
				t.Fatalf("an attack issued something (%d new allow records)", n-issuedBefore)
			}
			if n := countDecisions(t, env, audit.Deny); n != deniedBefore+1 {
				t.Fatalf("attempt not recorded: %d new denial records", n-deniedBefore)
			}
		})
	}
	// The revoked parent: after alpha is revoked, its mTLS no longer
	// authenticates, so it cannot delegate at all.
	if _, err := env.Operator.RevokeAgent(ctx, "beta", "test"); err != nil {
		t.Fatal(err)
	}
	betaTok := "irrelevant"
	got := postOAuth(t, beta.HTTPClient(), env.URL+token.TokenPath, form, exchange(betaTok, nil), nil)
	if got.status != 401 || got.code != "invalid_client" || !strings.Contains(got.desc, "revoked") {
		t.Fatalf("exchange by a revoked parent: %+v", got)
	}
	if _, err := beta.Delegate(ctx, betaTok, client.DelegateOptions{}); !client.IsCode(err, "invalid_client") {
		t.Fatalf("Delegate by a revoked parent: %v", err)
	}
}

// countDecisions counts token records with a decision.
func countDecisions(t *testing.T, env *testenv.Env, d audit.Decision) int {
	n := 0
	for _, a := range []string{token.ActionTokenIssue, token.ActionTokenExchange, "agent.delegate", audit.ActionSVIDIssue} {
		for _, ev := range events(t, env, a) {
			if ev.Decision == d {
				n++
			}
		}
	}
	return n
}
