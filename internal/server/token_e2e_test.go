package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

const gw = "https://gateway.bulkhead.test"

// tokenEnv is a control plane with a registered resource and an enrolled
// agent allowed some scopes.
func tokenEnv(t testing.TB, opts ...testenv.Option) (*testenv.Env, string) {
	t.Helper()
	env := testenv.Start(t, opts...)
	ctx := context.Background()
	if _, err := env.Operator.AddResource(ctx, gw, nil); err != nil {
		t.Fatal(err)
	}
	return env, enrollWithScopes(t, env, "alpha", "files:read", "files:write", "mcp", "admin")
}

func enrollWithScopes(t testing.TB, env *testenv.Env, name string, scopes ...string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := env.Operator.CreateAgent(ctx, name, 0, scopes...); err != nil {
		t.Fatal(err)
	}
	tok, err := env.Operator.JoinToken(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if _, err := client.Enroll(ctx, env.URL, tok.Token, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func thumb(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// The issue's acceptance path: an off-the-shelf OAuth client obtains a token
// over mTLS; go-jose verifies it against the JWKS found through the RFC
// 8414 metadata; cnf binds it to the agent's certificate.
func TestClientCredentialsWithOffTheShelfOAuth2(t *testing.T) {
	env, dir := tokenEnv(t)
	agent := env.Client(dir)
	leaf := agent.Source().Leaf()

	pub := publicClient(t, env.Server.BundlePEM())
	var md token.Metadata
	getJSON(t, pub, env.URL+token.MetadataPath, &md)
	if md.Issuer != env.URL || md.TokenEndpoint != env.URL+"/oauth2/token" || !md.TLSClientCertificateBoundAccessTokens ||
		md.IntrospectionEndpoint == "" || md.RevocationEndpoint == "" || len(md.GrantTypesSupported) != 2 {
		t.Fatalf("metadata = %+v", md)
	}
	for _, m := range md.TokenEndpointAuthMethodsSupported {
		if strings.Contains(m, "secret") {
			t.Fatalf("metadata advertises %s", m)
		}
	}

	cc := clientcredentials.Config{ClientID: agent.Source().ID().String(), TokenURL: md.TokenEndpoint,
		Scopes: []string{"files:read", "mcp"}, AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{"resource": {gw}}}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, agent.HTTPClient())
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("golang.org/x/oauth2/clientcredentials: %v", err)
	}
	if tok.TokenType != "Bearer" || time.Until(tok.Expiry) > 5*time.Minute+time.Second || time.Until(tok.Expiry) < 4*time.Minute {
		t.Fatalf("token type %s, expiry in %s", tok.TokenType, time.Until(tok.Expiry))
	}

	var jwks jose.JSONWebKeySet
	getJSON(t, pub, md.JWKSURI, &jwks)
	parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if typ := parsed.Headers[0].ExtraHeaders[jose.HeaderType]; typ != "at+jwt" {
		t.Fatalf("typ = %v, want at+jwt (RFC 9068)", typ)
	}
	keys := jwks.Key(parsed.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in JWKS", parsed.Headers[0].KeyID)
	}
	var c token.Claims
	var std jwt.Claims
	if err := parsed.Claims(keys[0].Key, &c, &std); err != nil {
		t.Fatalf("go-jose rejects the signature: %v", err)
	}
	if err := std.Validate(jwt.Expected{Issuer: env.URL, Subject: "spiffe://bulkhead.local/agent/alpha", AnyAudience: jwt.Audience{gw}, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if c.ClientID != c.Subject || c.Scope != "files:read mcp" || c.ID == "" || c.IssuedAt == nil ||
		c.Expiry.Time().Sub(c.IssuedAt.Time()) != 5*time.Minute {
		t.Fatalf("claims = %+v", c)
	}
	if c.Cnf == nil || c.Cnf.X5TS256 != thumb(leaf.Raw) {
		t.Fatalf("cnf = %+v, want the SHA-256 thumbprint of the agent's certificate", c.Cnf)
	}
	ev := lastEvent(t, env, token.ActionTokenIssue)
	if ev.Decision != audit.Allow || ev.Actor.ID != c.Subject || ev.Detail["jti"] != c.ID || ev.Target != gw {
		t.Fatalf("issuance record = %+v", ev)
	}
}

func getJSON(t *testing.T, hc *http.Client, u string, v any) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, b)
	}
}

func TestIntrospectionHonoursRevocationAndExpiry(t *testing.T) {
	fake := clock.NewFake(time.Now())
	env, dir := tokenEnv(t, testenv.WithClock(fake))
	ctx := context.Background()
	agent := env.Client(dir)
	first, err := agent.RequestToken(ctx, gw, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	second, err := agent.RequestToken(ctx, gw, "mcp")
	if err != nil {
		t.Fatal(err)
	}
	if in, err := env.Operator.Introspect(ctx, first.AccessToken); err != nil || !in.Active || in.Sub != "spiffe://bulkhead.local/agent/alpha" || in.Cnf == nil {
		t.Fatalf("fresh token: %+v %v", in, err)
	}
	if err := agent.RevokeToken(ctx, first.AccessToken, "done"); err != nil {
		t.Fatal(err)
	}
	if in, _ := env.Operator.Introspect(ctx, first.AccessToken); in.Active {
		t.Fatal("a revoked token is still active")
	}
	rev := lastEvent(t, env, token.ActionTokenRevoke)
	if rev.Decision != audit.Allow || rev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
		t.Fatalf("revocation record = %+v", rev)
	}
	if in, _ := env.Operator.Introspect(ctx, second.AccessToken); !in.Active {
		t.Fatal("revoking one token revoked another")
	}
	fake.Advance(5*time.Minute + time.Minute)
	if in, _ := env.Operator.Introspect(ctx, second.AccessToken); in.Active {
		t.Fatal("an expired token is still active")
	}
	// Agents cannot introspect: that would let one read others' tokens.
	if _, err := agent.Introspect(ctx, second.AccessToken); !client.IsCode(err, "forbidden") {
		t.Fatalf("agent introspection: %v", err)
	}
}

func TestTokenRevocationIsPublishedForGateways(t *testing.T) {
	env, dir := tokenEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agent := env.Client(dir)
	tok, err := agent.RequestToken(ctx, gw)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/v1/events?action="+token.ActionTokenRevoke, nil)
	resp, err := env.Operator.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := env.Operator.RevokeToken(ctx, tok.AccessToken, "incident"); err != nil {
		t.Fatal(err)
	}
	var c token.Claims
	if err := jwtPayload(tok.AccessToken, &c); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	got := ""
	for !strings.Contains(got, c.ID) {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("stream ended: %v (%q)", err, got)
		}
		got += string(buf[:n])
	}
}

func jwtPayload(raw string, v any) error {
	parts := strings.Split(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func TestThreeLevelDelegationNarrowsAndDiesWithTheRoot(t *testing.T) {
	env, dir := tokenEnv(t)
	ctx := context.Background()
	root := env.Client(dir)
	rootTok, err := root.RequestToken(ctx, gw, "files:read", "files:write", "mcp", "admin")
	if err != nil {
		t.Fatal(err)
	}
	type level struct {
		sub *client.SubAgent
		c   *client.Client
	}
	var levels []level
	parent, parentTok := root, rootTok.AccessToken
	scopes := [][]string{{"files:read", "files:write", "mcp"}, {"files:read", "mcp"}, {"files:read"}}
	for i, sc := range scopes {
		sub, err := parent.Delegate(ctx, parentTok, client.DelegateOptions{Scopes: sc, TTL: time.Duration(4-i) * time.Minute})
		if err != nil {
			t.Fatalf("delegation level %d: %v", i+1, err)
		}
		c, err := client.New(env.URL, sub.Source)
		if err != nil {
			t.Fatal(err)
		}
		levels = append(levels, level{sub, c})
		var claims token.Claims
		if err := jwtPayload(sub.Token.AccessToken, &claims); err != nil {
			t.Fatal(err)
		}
		if claims.Scope != strings.Join(sc, " ") {
			t.Fatalf("level %d scope %q, want %q", i+1, claims.Scope, sc)
		}
		if len(claims.Chain()) != i+1 || claims.Chain()[0] != parent.Source().ID().String() || claims.Chain()[i] != "spiffe://bulkhead.local/agent/alpha" {
			t.Fatalf("level %d act chain = %v", i+1, claims.Chain())
		}
		if len(claims.Delegation) != i+1 {
			t.Fatalf("level %d delegation = %v", i+1, claims.Delegation)
		}
		var parentClaims token.Claims
		_ = jwtPayload(parentTok, &parentClaims)
		if claims.Expiry.Time().After(parentClaims.Expiry.Time()) || sub.Source.Leaf().NotAfter.After(parentClaims.Expiry.Time()) {
			t.Fatalf("level %d outlives its parent", i+1)
		}
		if want := parent.Source().ID().Path() + "/sub/"; !strings.HasPrefix(sub.ID.Path(), want) {
			t.Fatalf("level %d ID %s not below %s", i+1, sub.ID, want)
		}
		// The sub-agent's own client_credentials tokens carry its
		// ancestry too.
		own, err := c.RequestToken(ctx, gw)
		if err != nil {
			t.Fatalf("level %d client_credentials: %v", i+1, err)
		}
		var ownClaims token.Claims
		_ = jwtPayload(own.AccessToken, &ownClaims)
		if ownClaims.Scope != claims.Scope || len(ownClaims.Chain()) != i+1 {
			t.Fatalf("level %d own token: scope %q chain %v", i+1, ownClaims.Scope, ownClaims.Chain())
		}
		parent, parentTok = c, sub.Token.AccessToken
	}
	// Depth 4 is over the default limit of 3.
	if _, err := parent.Delegate(ctx, parentTok, client.DelegateOptions{}); err == nil || !strings.Contains(err.Error(), "depth") {
		t.Fatalf("depth overflow: %v", err)
	}

	// Revoking the root agent kills every level's certificates and tokens.
	if _, err := env.Operator.RevokeAgent(ctx, "alpha", "compromised"); err != nil {
		t.Fatal(err)
	}
	for i, l := range levels {
		if in, _ := env.Operator.Introspect(ctx, l.sub.Token.AccessToken); in.Active {
			t.Errorf("level %d token still active", i+1)
		}
		name := strings.TrimPrefix(l.sub.ID.Path(), "/agent/")
		a, err := env.Operator.GetAgent(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if a.Status != "revoked" || len(a.Certificates) != 1 || !a.Certificates[0].Revoked {
			t.Errorf("level %d after root revocation: %+v", i+1, a)
		}
		if _, err := l.c.RequestToken(ctx, gw); err == nil {
			t.Errorf("level %d still obtains tokens", i+1)
		}
	}
	if in, _ := env.Operator.Introspect(ctx, rootTok.AccessToken); in.Active {
		t.Error("root token still active")
	}
}

func TestDisablingAParentRevokesItsSubAgents(t *testing.T) {
	env, dir := tokenEnv(t)
	ctx := context.Background()
	root := env.Client(dir)
	tok, err := root.RequestToken(ctx, gw)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := root.Delegate(ctx, tok.AccessToken, client.DelegateOptions{Scopes: []string{"mcp"}, Name: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if sub.ID.String() != "spiffe://bulkhead.local/agent/alpha/sub/worker" {
		t.Fatalf("sub-agent ID %s", sub.ID)
	}
	if _, err := env.Operator.SetAgentEnabled(ctx, "alpha", false); err != nil {
		t.Fatal(err)
	}
	a, _ := env.Operator.GetAgent(ctx, "alpha/sub/worker")
	if a.Status != "revoked" || !a.Certificates[0].Revoked {
		t.Fatalf("sub-agent after parent disabled: %+v", a)
	}
	if in, _ := env.Operator.Introspect(ctx, sub.Token.AccessToken); in.Active {
		t.Fatal("sub-agent token active after parent disabled")
	}
	// Revoking a parent's token withdraws what it delegated.
	if _, err := env.Operator.SetAgentEnabled(ctx, "alpha", true); err != nil {
		t.Fatal(err)
	}
	tok2, err := root.RequestToken(ctx, gw)
	if err != nil {
		t.Fatal(err)
	}
	sub2, err := root.Delegate(ctx, tok2.AccessToken, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.RevokeToken(ctx, tok2.AccessToken, "task over"); err != nil {
		t.Fatal(err)
	}
	if in, _ := env.Operator.Introspect(ctx, sub2.Token.AccessToken); in.Active {
		t.Fatal("sub-agent token active after its parent token was revoked")
	}
	name := strings.TrimPrefix(sub2.ID.Path(), "/agent/")
	if a, _ := env.Operator.GetAgent(ctx, name); a.Status != "revoked" {
		t.Fatalf("sub-agent %s is %s after its delegating token was revoked", name, a.Status)
	}
}

func TestTokenSourceCachesAndFollowsRotation(t *testing.T) {
	env, dir := tokenEnv(t)
	ctx := context.Background()
	agent := env.Client(dir)
	ts := agent.TokenSource(gw, "mcp")
	t1, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	t2, _ := ts.Token()
	if t1.AccessToken != t2.AccessToken {
		t.Fatal("token source did not cache")
	}
	if _, err := agent.Renew(ctx, dir); err != nil {
		t.Fatal(err)
	}
	t3, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if t3.AccessToken == t1.AccessToken || tokenCnfOf(t, t3.AccessToken) != thumb(agent.Source().Leaf().Raw) {
		t.Fatal("token source kept a token bound to the previous certificate")
	}
	ts.Early = 5 * time.Minute // everything is "about to expire"
	t4, _ := ts.Token()
	if t4.AccessToken == t3.AccessToken {
		t.Fatal("token source did not refresh before expiry")
	}
}

func tokenCnfOf(t *testing.T, raw string) string {
	var c token.Claims
	if err := jwtPayload(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Cnf.X5TS256
}

// private_key_jwt: for agents behind a TLS-terminating hop, a JWT signed
// with the SVID key (with the SVID in x5c) authenticates instead of mTLS.
func TestPrivateKeyJWT(t *testing.T) {
	env, dir := tokenEnv(t)
	cred, err := svidfile.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	assertion := func(aud, jti string, exp time.Time, key any) string {
		var x5c []string
		for _, c := range cred.SVID.Certificates {
			x5c = append(x5c, base64.StdEncoding.EncodeToString(c.Raw))
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
			(&jose.SignerOptions{}).WithHeader("x5c", x5c))
		if err != nil {
			t.Fatal(err)
		}
		id := cred.SVID.ID.String()
		s, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: id, Subject: id, Audience: jwt.Audience{aud},
			Expiry: jwt.NewNumericDate(exp), ID: jti}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hc := publicClient(t, env.Server.BundlePEM()) // no client certificate
	post := func(a string) (int, map[string]any) {
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {gw},
			"client_assertion_type": {token.AssertionTypeJWTBearer}, "client_assertion": {a}}
		resp, err := hc.PostForm(env.URL+token.TokenPath, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	good := assertion(env.URL+token.TokenPath, "a1", time.Now().Add(time.Minute), cred.SVID.PrivateKey)
	status, out := post(good)
	if status != 200 {
		t.Fatalf("private_key_jwt: %d %v", status, out)
	}
	if tokenCnfOf(t, out["access_token"].(string)) != thumb(cred.Leaf().Raw) {
		t.Fatal("token not bound to the SVID in x5c")
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name, assertion, want string
	}{
		{"replayed", good, "already used"},
		{"wrong audience", assertion("https://elsewhere/token", "a2", time.Now().Add(time.Minute), cred.SVID.PrivateKey), "aud"},
		{"expired", assertion(env.URL+token.TokenPath, "a3", time.Now().Add(-time.Minute), cred.SVID.PrivateKey), "expired"},
		{"too long-lived", assertion(env.URL+token.TokenPath, "a4", time.Now().Add(time.Hour), cred.SVID.PrivateKey), "ahead"},
		{"signed by another key", assertion(env.URL+token.TokenPath, "a5", time.Now().Add(time.Minute), other), "signature"},
		{"garbage", "not-a-jwt", "client assertion"},
	}
	for _, c := range cases {
		status, out := post(c.assertion)
		if status != http.StatusUnauthorized || out["error"] != "invalid_client" || !strings.Contains(out["error_description"].(string), c.want) {
			t.Errorf("%s: %d %v, want invalid_client mentioning %q", c.name, status, out, c.want)
		}
	}
}
