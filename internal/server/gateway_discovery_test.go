package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// discoveryEnv is a control plane with an in-process gateway whose
// resource is the URL it really listens on, https://127.0.0.1:PORT, so
// that an unmodified client (an SDK's discovery, Node's fetch) reaches the
// resource it discovers: the MCP server files and the HTTP API billing.
type discoveryEnv struct {
	*testenv.Env
	GatewayURL string // = the gateway's resource
	Files      *gatewaytest.FilesServer
}

func startDiscoveryEnv(t *testing.T) *discoveryEnv {
	t.Helper()
	// The resource must be known before the gateway starts: take a free
	// port and give it back (the gateway binds it a moment later). It is
	// taken below the kernel's ephemeral range, so no connection of a test
	// running beside this one can be given it in between.
	addr := freePortBelowEphemeral(t)
	files := gatewaytest.StartFiles(t, "Bearer "+filesSecret)
	api := gatewaytest.StartHTTP(t)
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	yaml := `listen: ` + addr + `
resource: https://` + addr + `
servers:
  - name: files
    mcp: { url: ` + files.URL + ` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
  - name: billing
    http:
      url: ` + api.URL + `
      routes: [{ name: invoices, method: GET, path: "/v1/invoices/{id}" }]
    callers: ["spiffe://bulkhead.local/agent/*"]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.WithConfig(func(c *server.Config) { c.GatewayConfig = cfg }))
	if _, err := env.Operator.SetSecret(context.Background(), "files-token", []byte(filesSecret)); err != nil {
		t.Fatal(err)
	}
	return &discoveryEnv{Env: env, GatewayURL: "https://" + env.Server.GatewayAddr(), Files: files}
}

// bearer adds a fixed access token to every request.
type bearer struct {
	base  http.RoundTripper
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// mtlsGatewayClient is an agent's mTLS client for any gateway of the trust
// domain, adding tok when it is not empty.
func mtlsGatewayClient(c *client.Client, tok string) *http.Client {
	hc := client.NewHTTPClient(c.Source(), client.AuthorizeGateways(td, ""))
	if tok != "" {
		hc.Transport = bearer{base: hc.Transport, token: tok}
	}
	hc.Timeout = 30 * time.Second
	return hc
}

// postPing sends an MCP ping and returns the response, body read.
func postPing(t *testing.T, hc *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// audienceOf decodes a token's aud without verifying it (the gateway
// verifies; the test only looks).
func audienceOf(t *testing.T, raw string) []string {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c.Audience
}

// The per-server metadata, the root document beside it, and the 401
// challenge that points to the server's document, as an MCP client meets
// them: no client certificate is needed to read metadata.
func TestGatewayServerMetadataAndChallenge(t *testing.T) {
	e := startDiscoveryEnv(t)
	pub := publicClient(t, e.Server.BundlePEM())
	type prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		Bearer               []string `json:"bearer_methods_supported"`
		Bound                bool     `json:"tls_client_certificate_bound_access_tokens"`
	}
	for _, c := range []struct{ path, want string }{
		{gateway.WellKnownResource + "/mcp/files", e.GatewayURL + "/mcp/files"},
		{gateway.WellKnownResource + "/http/billing", e.GatewayURL + "/http/billing"},
		{gateway.WellKnownResource, e.GatewayURL},
	} {
		var md prm
		getJSON(t, pub, e.GatewayURL+c.path, &md)
		if md.Resource != c.want || !slices.Equal(md.AuthorizationServers, []string{e.URL}) || !md.Bound || !slices.Equal(md.Bearer, []string{"header"}) {
			t.Fatalf("%s: %+v, want resource %s and authorization server %s", c.path, md, c.want, e.URL)
		}
	}
	for _, p := range []string{"/mcp/files/x", "/mcp/..", "/mcp/%2e%2e", "/http/billing/v1", "/admin/files"} {
		resp, err := pub.Get(e.GatewayURL + gateway.WellKnownResource + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("metadata for %s: %d, want 404", p, resp.StatusCode)
		}
	}

	// The challenge, for an agent with its certificate but no token, and
	// for a client with neither.
	dir := enrollWithScopes(t, e.Env, "alpha", "mcp")
	bare := mtlsGatewayClient(e.Client(dir), "")
	for _, c := range []struct {
		hc         *http.Client
		path, want string
	}{
		{bare, "/mcp/files", e.GatewayURL + gateway.WellKnownResource + "/mcp/files"},
		{bare, "/http/billing/v1/invoices/7", e.GatewayURL + gateway.WellKnownResource + "/http/billing"},
		{pub, "/mcp/files", e.GatewayURL + gateway.WellKnownResource + "/mcp/files"},
	} {
		resp, _ := postPing(t, c.hc, e.GatewayURL+c.path)
		ch, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
		if resp.StatusCode != http.StatusUnauthorized || err != nil || len(ch) != 1 || ch[0].Scheme != "bearer" || ch[0].Params["resource_metadata"] != c.want {
			t.Fatalf("%s: %d %q (%v), want 401 pointing to %s", c.path, resp.StatusCode, resp.Header.Values("WWW-Authenticate"), err, c.want)
		}
	}
}

// Discovery with the MCP Go SDK's own functions (oauthex, auth), over mTLS
// to the real gateway, then the token a client would ask for (resource =
// the server's URL) used at that server; golang.org/x/oauth2 has no RFC
// 8414 or 9728 discovery of its own.
func TestGatewayDiscoveryGoSDK(t *testing.T) {
	e := startDiscoveryEnv(t)
	ctx := context.Background()
	dir := enrollWithScopes(t, e.Env, "alpha", "mcp")
	agent := e.Client(dir)
	serverURL := e.GatewayURL + "/mcp/files"
	bare := mtlsGatewayClient(agent, "")

	// 401 → resource_metadata → RFC 9728 metadata, checked by the SDK
	// against the URL the client uses (RFC 9728 §3.3).
	resp, _ := postPing(t, bare, serverURL)
	ch, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
	if err != nil || len(ch) != 1 {
		t.Fatalf("challenge %q: %v", resp.Header.Values("WWW-Authenticate"), err)
	}
	prm, err := oauthex.GetProtectedResourceMetadata(ctx, ch[0].Params["resource_metadata"], serverURL, bare)
	if err != nil {
		t.Fatalf("the SDK rejects the server's metadata: %v", err)
	}
	if prm.Resource != serverURL || !slices.Equal(prm.AuthorizationServers, []string{e.URL}) || !prm.TLSClientCertificateBoundAccessTokens {
		t.Fatalf("protected resource metadata = %+v", prm)
	}
	// The root document, where a client falls back, is the gateway's.
	root, err := oauthex.GetProtectedResourceMetadata(ctx, e.GatewayURL+gateway.WellKnownResource, e.GatewayURL, bare)
	if err != nil || root.Resource != e.GatewayURL {
		t.Fatalf("root metadata: %+v %v", root, err)
	}

	// RFC 8414 metadata of the issuer the document names. The SDK's
	// GetAuthServerMeta also demands PKCE (code_challenge_methods_supported),
	// which belongs to the authorization endpoint Bulkhead does not have
	// (see docs/tokens.md): it refuses for that reason and no other.
	asm, err := auth.GetAuthServerMetadata(ctx, prm.AuthorizationServers[0], agent.HTTPClient())
	switch {
	case err != nil && !strings.Contains(err.Error(), "does not implement PKCE"):
		t.Fatalf("the SDK refuses the authorization server metadata: %v", err)
	case err != nil:
		t.Logf("go-sdk auth.GetAuthServerMetadata: %v (expected: it requires PKCE of every authorization server)", err)
	case asm == nil || asm.Issuer != e.URL || asm.TokenEndpoint != e.URL+token.TokenPath:
		t.Fatalf("authorization server metadata = %+v", asm)
	}
	doc := fetchRFC8414(t, agent.HTTPClient(), e.URL)

	// The token an MCP client asks for: resource = the server's URL.
	cc := clientcredentials.Config{ClientID: agent.Source().ID().String(), TokenURL: doc["token_endpoint"].(string),
		AuthStyle: oauth2.AuthStyleInParams, EndpointParams: url.Values{"resource": {prm.Resource}}}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, agent.HTTPClient()))
	if err != nil {
		t.Fatalf("a token for %s: %v", prm.Resource, err)
	}
	if aud := audienceOf(t, tok.AccessToken); !slices.Equal(aud, []string{serverURL}) {
		t.Fatalf("aud = %v, want exactly %s", aud, serverURL)
	}
	cs := gatewaytest.Connect(t, serverURL, mtlsGatewayClient(agent, tok.AccessToken))
	if err := cs.Ping(ctx, nil); err != nil {
		t.Fatalf("ping with the server's token: %v", err)
	}
	// The same token is not good at the gateway's other server.
	resp, body := postPing(t, mtlsGatewayClient(agent, tok.AccessToken), e.GatewayURL+"/http/billing/v1/invoices/7")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "nor this server") {
		t.Fatalf("files' token at billing: %d %s", resp.StatusCode, body)
	}
}

// fetchRFC8414 reads the control plane's RFC 8414 document and checks it
// against the RFC's field types and rules.
func fetchRFC8414(t *testing.T, hc *http.Client, issuer string) map[string]any {
	t.Helper()
	resp, err := hc.Get(issuer + token.MetadataPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("metadata: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return checkRFC8414(t, b, issuer)
}

// scopeToken is RFC 6749 §3.3's scope-token.
var scopeToken = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)

// checkRFC8414 validates an authorization server metadata document: RFC
// 8414 §2 types (URLs are https URLs, lists are arrays of strings,
// booleans are booleans), §3.2 (no zero-element arrays), §2's conditional
// requirements, and what follows from having no authorization endpoint.
func checkRFC8414(t *testing.T, b []byte, issuer string) map[string]any {
	t.Helper()
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("metadata is not a JSON object: %v: %s", err, b)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("RFC 8414: "+format+"\n%s", append(args, b)...)
	}
	if doc["issuer"] != issuer {
		fail("issuer %v is not %s", doc["issuer"], issuer)
	}
	for _, k := range []string{"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint",
		"service_documentation", "op_policy_uri", "op_tos_uri", "revocation_endpoint", "introspection_endpoint"} {
		v, ok := doc[k]
		if !ok {
			continue
		}
		s, _ := v.(string)
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Fragment != "" || (k == "issuer" && u.RawQuery != "") {
			fail("%s = %v is not an https URL", k, v)
		}
	}
	for _, k := range []string{"token_endpoint", "jwks_uri"} {
		if _, ok := doc[k]; !ok {
			fail("%s is missing", k)
		}
	}
	lists := map[string][]string{}
	for _, k := range []string{"scopes_supported", "response_types_supported", "response_modes_supported", "grant_types_supported",
		"token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported", "ui_locales_supported",
		"revocation_endpoint_auth_methods_supported", "revocation_endpoint_auth_signing_alg_values_supported",
		"introspection_endpoint_auth_methods_supported", "introspection_endpoint_auth_signing_alg_values_supported",
		"code_challenge_methods_supported"} {
		v, ok := doc[k]
		if !ok {
			continue
		}
		arr, isArr := v.([]any)
		if !isArr || len(arr) == 0 {
			fail("%s = %v is not a non-empty array (§3.2: claims with zero elements are omitted)", k, v)
		}
		for _, x := range arr {
			s, isStr := x.(string)
			if !isStr || s == "" || slices.Contains(lists[k], s) {
				fail("%s has %v: want distinct non-empty strings", k, x)
			}
			lists[k] = append(lists[k], s)
		}
		if strings.HasSuffix(k, "_signing_alg_values_supported") && slices.Contains(lists[k], "none") {
			fail("%s lists none", k)
		}
	}
	for _, k := range []string{"tls_client_certificate_bound_access_tokens", "authorization_response_iss_parameter_supported"} {
		if v, ok := doc[k]; ok {
			if _, isBool := v.(bool); !isBool {
				fail("%s = %v is not a boolean", k, v)
			}
		}
	}
	for _, sc := range lists["scopes_supported"] {
		if !scopeToken.MatchString(sc) {
			fail("scope %q is not a scope-token", sc)
		}
	}
	for _, ep := range []string{"token_endpoint", "revocation_endpoint", "introspection_endpoint"} {
		methods := lists[strings.TrimSuffix(ep, "_endpoint")+"_endpoint_auth_methods_supported"]
		if (slices.Contains(methods, "private_key_jwt") || slices.Contains(methods, "client_secret_jwt")) &&
			len(lists[strings.TrimSuffix(ep, "_endpoint")+"_endpoint_auth_signing_alg_values_supported"]) == 0 {
			fail("%s accepts JWT client authentication but names no signing algorithm", ep)
		}
	}
	// Without an authorization endpoint: grant types must be listed (the
	// default is authorization_code and implicit) and use none of it, and
	// what describes the authorization endpoint is absent.
	if _, ok := doc["authorization_endpoint"]; !ok {
		if len(lists["grant_types_supported"]) == 0 || slices.Contains(lists["grant_types_supported"], "authorization_code") ||
			slices.Contains(lists["grant_types_supported"], "implicit") {
			fail("grant_types_supported %v needs an authorization endpoint", lists["grant_types_supported"])
		}
		for _, k := range []string{"response_types_supported", "response_modes_supported", "code_challenge_methods_supported",
			"authorization_response_iss_parameter_supported"} {
			if _, ok := doc[k]; ok {
				fail("%s describes an authorization endpoint there is none of", k)
			}
		}
	}
	return doc
}

// The served RFC 8414 document is valid, says what Bulkhead does, and
// lists the scopes registered resources name.
func TestAuthorizationServerMetadataRFC8414(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	pub := publicClient(t, env.Server.BundlePEM())
	doc := fetchRFC8414(t, pub, env.URL)
	if _, ok := doc["scopes_supported"]; ok {
		t.Fatalf("scopes_supported with no resource naming a scope: %v", doc["scopes_supported"])
	}
	for _, r := range []struct {
		uri    string
		scopes []string
	}{{"https://files.bulkhead.test", []string{"files:read", "files:write"}}, {"https://mail.bulkhead.test", []string{"mail:send", "files:read"}},
		{"https://any.bulkhead.test", nil}} {
		if _, err := env.Operator.AddResource(ctx, r.uri, r.scopes); err != nil {
			t.Fatal(err)
		}
	}
	doc = fetchRFC8414(t, pub, env.URL)
	want := map[string]any{
		"token_endpoint":                             env.URL + token.TokenPath,
		"jwks_uri":                                   env.URL + token.JWKSPath,
		"grant_types_supported":                      []any{token.GrantClientCredentials, token.GrantTokenExchange},
		"token_endpoint_auth_methods_supported":      []any{"tls_client_auth", "private_key_jwt"},
		"scopes_supported":                           []any{"files:read", "files:write", "mail:send"},
		"tls_client_certificate_bound_access_tokens": true,
	}
	for k, v := range want {
		if got, _ := json.Marshal(doc[k]); string(got) != string(must(json.Marshal(v))) {
			t.Errorf("%s = %s, want %s", k, got, must(json.Marshal(v)))
		}
	}
	if err := env.Operator.RemoveResource(ctx, "https://mail.bulkhead.test"); err != nil {
		t.Fatal(err)
	}
	doc = fetchRFC8414(t, pub, env.URL)
	if got, _ := json.Marshal(doc["scopes_supported"]); string(got) != `["files:read","files:write"]` {
		t.Fatalf("after a removal scopes_supported = %s", got)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// Attack stories on the per-server audience, in the standard environment
// (gateway resource https://gateway.bulkhead.test, servers files and notes).
func TestGatewayPerServerAudience(t *testing.T) {
	notes := gatewaytest.StartFiles(t, "Bearer "+filesSecret)
	e := startGateway(t, `  - name: notes
    mcp: { url: `+notes.URL+` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
`)
	ctx := context.Background()
	_, agent := e.Agent(t, "alpha", "reader")
	filesURL := gwResource + "/mcp/files"

	// The token service issues a token for the server's URL, under the
	// gateway's registration, with exactly that audience, and says so.
	tok, err := agent.RequestToken(ctx, filesURL)
	if err != nil {
		t.Fatalf("a token for %s: %v", filesURL, err)
	}
	if aud := audienceOf(t, tok.AccessToken); !slices.Equal(aud, []string{filesURL}) {
		t.Fatalf("aud = %v, want exactly %s", aud, filesURL)
	}
	if ev := lastEvent(t, e.Env.Env, token.ActionTokenIssue); ev.Decision != audit.Allow || ev.Target != filesURL || ev.Detail["registered_resource"] != gwResource {
		t.Fatalf("issuance record = %+v", ev)
	}

	// It works at that server: the reader sees its tools.
	cs := gatewaytest.Connect(t, e.GatewayURL+"/mcp/files", mtlsGatewayClient(agent, tok.AccessToken))
	list, err := cs.ListTools(ctx, nil)
	if err != nil || len(list.Tools) != 1 || list.Tools[0].Name != "read_file" {
		t.Fatalf("tools/list with the server's token: %+v %v", list, err)
	}

	// Attack: an agent takes its token for files to notes. Refused as a
	// bad token (401, pointing to notes' metadata) and recorded; notes'
	// upstream never hears of it.
	before := notes.Requests.Load()
	resp, body := postPing(t, mtlsGatewayClient(agent, tok.AccessToken), e.GatewayURL+"/mcp/notes")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "nor this server") ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `resource_metadata="`+gwResource+gateway.WellKnownResource+`/mcp/notes"`) {
		t.Fatalf("files' token at notes: %d %s %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}
	if notes.Requests.Load() != before {
		t.Fatal("the refused request reached notes")
	}
	refused := events(t, e.Env.Env, "gateway.authenticate")
	if len(refused) == 0 {
		t.Fatal("the refusal was not recorded")
	}
	ev := refused[len(refused)-1]
	if ev.Decision != audit.Deny || ev.Actor.ID != agent.Source().ID().String() || ev.Target != "/mcp/notes" ||
		len(ev.Reasons) != 1 || !strings.Contains(ev.Reasons[0], filesURL) {
		t.Fatalf("refusal record = %+v", ev)
	}

	// More tokens that must not get in, each for a URL that is not the
	// gateway's nor this server's.
	if _, err := e.Operator.AddResource(ctx, "https://gateway2.bulkhead.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, aud, path string }{
		{"another gateway's server of the same name", "https://gateway2.bulkhead.test/mcp/files", "/mcp/files"},
		{"another gateway", "https://gateway2.bulkhead.test", "/mcp/files"},
		{"the server's URL as an http api", gwResource + "/http/files", "/mcp/files"},
		{"a path below the server", gwResource + "/mcp/files/x", "/mcp/files"},
		{"the servers' common parent", gwResource + "/mcp", "/mcp/files"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, err := agent.RequestToken(ctx, c.aud)
			if err != nil {
				t.Fatalf("a token for %s: %v", c.aud, err)
			}
			resp, body := postPing(t, mtlsGatewayClient(agent, tok.AccessToken), e.GatewayURL+c.path)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not this gateway") {
				t.Fatalf("token for %s at %s: %d %s", c.aud, c.path, resp.StatusCode, body)
			}
		})
	}

	// The gateway's own audience keeps working at every server.
	gwTok, err := agent.RequestToken(ctx, gwResource)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"files", "notes"} {
		if err := gatewaytest.Connect(t, e.GatewayURL+"/mcp/"+s, mtlsGatewayClient(agent, gwTok.AccessToken)).Ping(ctx, nil); err != nil {
			t.Fatalf("the gateway's token at %s: %v", s, err)
		}
	}
}

// The token service issues tokens for path children of a registered
// resource, compared segment by segment, and for nothing that merely
// starts with the same characters.
func TestTokenForAPathUnderARegisteredResource(t *testing.T) {
	env, dir := tokenEnv(t) // registers https://gateway.bulkhead.test
	ctx := context.Background()
	agent := env.Client(dir)
	if _, err := env.Operator.AddResource(ctx, gw+"/mcp/scoped", []string{"files:read"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, resource string
		scope          string
		want           string // the scope granted, or the refusal
	}{
		{"a server of the gateway", gw + "/mcp/files", "mcp", "mcp"},
		{"an http api of the gateway", gw + "/http/billing", "mcp", "mcp"},
		// The nearest registration decides: its scopes, not the gateway's.
		{"below a more specific registration", gw + "/mcp/scoped/x", "files:read", "files:read"},
		{"below a more specific registration, out of its scopes", gw + "/mcp/scoped/x", "mcp", "invalid_scope"},
		{"host suffix", "https://gateway.bulkhead.test.evil/mcp/files", "", "invalid_target"},
		{"longer host", "https://gateway.bulkhead.testx/mcp", "", "invalid_target"},
		{"user info", "https://gateway.bulkhead.test@evil.example/mcp/files", "", "invalid_target"},
		{"other port", "https://gateway.bulkhead.test:8443/mcp/files", "", "invalid_target"},
		{"upper case host", "https://GATEWAY.bulkhead.test/mcp/files", "", "invalid_target"},
		// Not below /mcp/scoped: the gateway's registration (any scope).
		{"segment prefix", gw + "/mcp/scopedx", "mcp", "mcp"},
		{"dot dot", gw + "/mcp/../admin", "", "invalid_target"},
		{"encoded dot dot", gw + "/mcp/%2e%2e/admin", "", "invalid_target"},
		{"empty segment", gw + "/mcp//files", "", "invalid_target"},
		{"trailing slash", gw + "/mcp/files/", "", "invalid_target"},
		{"query", gw + "/mcp/files?x=1", "", "invalid_target"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var scopes []string
			if c.scope != "" {
				scopes = []string{c.scope}
			}
			tok, err := agent.RequestToken(ctx, c.resource, scopes...)
			var ce *client.Error
			switch {
			case strings.HasPrefix(c.want, "invalid_"):
				if err == nil || !errors.As(err, &ce) || ce.Code != c.want {
					t.Fatalf("got %+v %v, want %s", tok, err, c.want)
				}
				if ev := lastEvent(t, env, token.ActionTokenIssue); ev.Decision != audit.Deny || ev.Target != c.resource {
					t.Fatalf("refusal record = %+v", ev)
				}
			case err != nil:
				t.Fatalf("refused: %v", err)
			case tok.Scope != c.want || !slices.Equal(audienceOf(t, tok.AccessToken), []string{c.resource}):
				t.Fatalf("scope %q aud %v, want %q and exactly %s", tok.Scope, audienceOf(t, tok.AccessToken), c.want, c.resource)
			}
		})
	}
	// A sub-agent's token keeps its parent's (per-server) audience.
	parent, err := agent.RequestToken(ctx, gw+"/mcp/files", "mcp")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := agent.Delegate(ctx, parent.AccessToken, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if aud := audienceOf(t, sub.Token.AccessToken); !slices.Equal(aud, []string{gw + "/mcp/files"}) {
		t.Fatalf("sub-agent aud = %v", aud)
	}
	// Unregistering the gateway ends its children.
	if err := env.Operator.RemoveResource(ctx, gw); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.RequestToken(ctx, gw+"/mcp/files"); err == nil {
		t.Fatal("a token for a child of an unregistered resource")
	}
}

// Discovery with the MCP TypeScript SDK's own discovery functions
// (@modelcontextprotocol/client 2.4.0), run by Node against the real
// gateway over TLS: Node trusts the bundle (NODE_EXTRA_CA_CERTS); reading
// metadata needs no client certificate.
func TestGatewayDiscoveryTypeScriptSDK(t *testing.T) {
	dir := gatewaytest.NodeHarness(t) // skips without node_modules, fails then under CI=true
	e := startDiscoveryEnv(t)
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundle, e.Server.BundlePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	serverURL := e.GatewayURL + "/mcp/files"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "discovery.mjs", serverURL)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+bundle)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node discovery.mjs: %v\n%s", err, stderr.String())
	}
	type result[T any] struct {
		OK    bool `json:"ok"`
		Value T    `json:"value"`
		Error *struct {
			Name    string `json:"name"`
			Message string `json:"message"`
		} `json:"error"`
	}
	type prm struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		Bound                bool     `json:"tls_client_certificate_bound_access_tokens"`
	}
	var got struct {
		Challenge result[struct {
			Status              int    `json:"status"`
			ResourceMetadataURL string `json:"resourceMetadataUrl"`
		}] `json:"challenge"`
		PRMFromChallenge result[prm]    `json:"prmFromChallenge"`
		PRMWellKnown     result[prm]    `json:"prmWellKnown"`
		Resource         result[string] `json:"resource"`
		PRMFallback      result[prm]    `json:"prmFallback"`
		ResourceFallback result[string] `json:"resourceFallback"`
		DiscoveryURLs    result[[]struct {
			URL  string `json:"url"`
			Type string `json:"type"`
		}] `json:"discoveryUrls"`
		ASMetadata result[struct {
			Issuer        string `json:"issuer"`
			TokenEndpoint string `json:"token_endpoint"`
		}] `json:"asMetadata"`
		ASDocument result[struct {
			Status      int             `json:"status"`
			ContentType string          `json:"contentType"`
			Body        json.RawMessage `json:"body"`
		}] `json:"asDocument"`
		ServerInfo result[json.RawMessage] `json:"serverInfo"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node printed %s: %v", out, err)
	}
	t.Logf("node: %s", out)
	wantMD := e.GatewayURL + gateway.WellKnownResource + "/mcp/files"
	if c := got.Challenge; !c.OK || c.Value.Status != http.StatusUnauthorized || c.Value.ResourceMetadataURL != wantMD {
		t.Fatalf("challenge: %+v, want 401 pointing to %s", c, wantMD)
	}
	for name, p := range map[string]result[prm]{"from the challenge": got.PRMFromChallenge, "by well-known probing": got.PRMWellKnown} {
		if !p.OK || p.Value.Resource != serverURL || !slices.Equal(p.Value.AuthorizationServers, []string{e.URL}) || !p.Value.Bound {
			t.Fatalf("protected resource metadata %s: %+v", name, p)
		}
	}
	if !got.Resource.OK || got.Resource.Value != serverURL {
		t.Fatalf("the SDK's resource indicator: %+v, want %s", got.Resource, serverURL)
	}
	// An unknown path falls back to the root document, which covers it.
	if !got.PRMFallback.OK || got.PRMFallback.Value.Resource != e.GatewayURL || !got.ResourceFallback.OK || got.ResourceFallback.Value != e.GatewayURL+"/" {
		t.Fatalf("fallback: %+v %+v", got.PRMFallback, got.ResourceFallback)
	}
	if d := got.DiscoveryURLs; !d.OK || len(d.Value) == 0 || d.Value[0].URL != e.URL+token.MetadataPath || d.Value[0].Type != "oauth" {
		t.Fatalf("discovery URLs: %+v", d)
	}
	if d := got.ASDocument; !d.OK || d.Value.Status != http.StatusOK || d.Value.ContentType != "application/json" {
		t.Fatalf("authorization server document: %+v", d)
	}
	checkRFC8414(t, got.ASDocument.Value.Body, e.URL)
	// The SDK's OAuthMetadataSchema requires authorization_endpoint and
	// response_types_supported, which an authorization server without an
	// authorization endpoint does not have (see docs/tokens.md): it
	// refuses for that reason and no other.
	for name, r := range map[string]struct {
		ok  bool
		err string
	}{"discoverAuthorizationServerMetadata": {got.ASMetadata.OK, errText(got.ASMetadata.Error)}, "discoverOAuthServerInfo": {got.ServerInfo.OK, errText(got.ServerInfo.Error)}} {
		switch {
		case r.ok:
			t.Logf("%s accepts the metadata", name)
		case !strings.Contains(r.err, "authorization_endpoint"):
			t.Fatalf("%s refuses the metadata: %s", name, r.err)
		default:
			t.Logf("%s: %s (expected: the SDK requires an authorization endpoint)", name, r.err)
		}
	}
	if got.ASMetadata.OK && (got.ASMetadata.Value.Issuer != e.URL || got.ASMetadata.Value.TokenEndpoint != e.URL+token.TokenPath) {
		t.Fatalf("authorization server metadata: %+v", got.ASMetadata.Value)
	}
}

func errText(e *struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}) string {
	if e == nil {
		return ""
	}
	return e.Name + ": " + e.Message
}

// freePortBelowEphemeral returns a loopback address whose port is free and
// outside the ephemeral range (32768 and up by default on Linux), which
// only an explicit bind can take.
func freePortBelowEphemeral(t *testing.T) string {
	t.Helper()
	start := 20000 + mathrand.IntN(10000)
	for p := start; p < start+2000; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			addr := ln.Addr().String()
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}
