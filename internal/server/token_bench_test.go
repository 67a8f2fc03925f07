package server_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// BenchmarkTokenIssuance compares client_credentials token issuance over
// HTTPS with mTLS keep-alive connections — client authentication by SVID,
// scope and resource checks, ES256 signing, and the durable audit record
// of each token — with the raw ES256 signing rate of the same key type, in
// one run. All use all cores (RunParallel); the load generator shares the
// machine with the server. The floor case answers without issuing anything,
// to show what HTTPS and the load generator cost on their own.
func BenchmarkTokenIssuance(b *testing.B) {
	claims, _ := json.Marshal(token.Claims{Issuer: "https://127.0.0.1:8443", Subject: "spiffe://bulkhead.local/agent/alpha",
		ClientID: "spiffe://bulkhead.local/agent/alpha", Audience: []string{gw}, Scope: "mcp files:read", ID: "0123456789abcdefghijkl",
		Cnf: &token.Confirmation{X5TS256: "0123456789012345678901234567890123456789012"}})
	b.Run("raw_es256_sign", func(b *testing.B) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k"}},
			(&jose.SignerOptions{}).WithType("at+jwt"))
		if err != nil {
			b.Fatal(err)
		}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				jws, err := signer.Sign(claims)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := jws.CompactSerialize(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	// The same issuance without HTTP or TLS: the authorization server's own
	// work (checks, signing, the durable audit record), called in process.
	b.Run("service_in_process", func(b *testing.B) {
		env, dir := tokenEnv(b)
		agent := env.Client(dir)
		leaf := agent.Source().Leaf()
		cl := token.Client{Principal: peer.Principal{ID: agent.Source().ID(), Kind: audit.ActorAgent, Name: "alpha", Cert: leaf},
			Cert: leaf, Method: "tls_client_auth"}
		req := token.Request{GrantType: token.GrantClientCredentials, Resource: gw, Scope: "mcp files:read"}
		svc := env.Server.Token()
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := svc.Token(context.Background(), cl, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("https_mtls_keepalive", func(b *testing.B) {
		env, dir := tokenEnv(b)
		postTokens(b, env.Client(dir), env.URL)
	})
	// The same requests from a minimal HTTP/1.1 load generator (one
	// request in flight per mTLS connection, like wrk): net/http's client
	// spends about as much CPU per request as the server's HTTP layer, and
	// here it shares the two cores with the server.
	b.Run("https_mtls_keepalive_lean_client", func(b *testing.B) {
		env, dir := tokenEnv(b)
		agent := env.Client(dir)
		cfg := agent.TLSConfig()
		cfg.NextProtos = []string{"http/1.1"}
		u, _ := url.Parse(env.URL)
		raw := []byte(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
			token.TokenPath, u.Host, len(tokenForm), tokenForm))
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			conn, err := tls.Dial("tcp", u.Host, cfg)
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			for pb.Next() {
				if _, err := conn.Write(raw); err != nil {
					b.Error(err)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	})
	// The floor: the same client, connections and server TLS configuration
	// answering with a token made beforehand, so nothing is checked, signed
	// or recorded. What HTTPS with mTLS and the load generator cost on
	// their own, against the same baseline.
	b.Run("https_mtls_keepalive_floor_no_issuance", func(b *testing.B) {
		env, dir := tokenEnv(b)
		agent := env.Client(dir)
		tok, err := agent.RequestToken(context.Background(), gw, "mcp", "files:read")
		if err != nil {
			b.Fatal(err)
		}
		body, _ := json.Marshal(tok)
		srv := &http.Server{TLSConfig: env.Server.TLSConfig(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ParseForm() != nil || r.PostForm.Get("grant_type") == "" {
				http.Error(w, "bad form", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write(body)
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		defer srv.Close()
		postTokens(b, agent, "https://"+ln.Addr().String())
	})
}

// tokenForm is the benchmark's token request.
var tokenForm = url.Values{"grant_type": {"client_credentials"}, "resource": {gw}, "scope": {"mcp files:read"}}.Encode()

// postTokens posts tokenForm to base's token endpoint from 64 clients on
// HTTP/1.1 keep-alive mTLS connections (one each, as most OAuth client
// libraries use) until b is done.
func postTokens(b *testing.B, agent *client.Client, base string) {
	tr := &http.Transport{TLSClientConfig: agent.TLSConfig(), MaxIdleConnsPerHost: 256,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx := context.Background()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+token.TokenPath, strings.NewReader(tokenForm))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
	b.StopTimer()
}
