package token

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// sqlCause stands for whatever a driver says when the store fails.
const sqlCause = "pq: relation token_keys does not exist"

// mapFault keeps the caller's mistakes in their own words and replaces the
// server's failures with a fixed text, keeping the cause for the log.
func TestMapFault(t *testing.T) {
	own := oauthErr("invalid_scope", "scope %q is not allowed", "admin")
	cases := []struct {
		name   string
		err    error
		code   string
		desc   string
		status int
		cause  bool
	}{
		{"unclassified store error", fmt.Errorf("token: revoke sub-agents of j1: %s", sqlCause), "server_error", "internal error", 500, true},
		{"store unavailable", fmt.Errorf("%w: revocation status unknown: %s", fault.Unavailable, sqlCause), "temporarily_unavailable", "the service is temporarily unavailable; retry shortly", 503, true},
		{"unavailable under a client kind", fmt.Errorf("%w: agent alpha: %w", fault.Forbidden, fmt.Errorf("%w: %s", fault.Unavailable, sqlCause)), "temporarily_unavailable", "the service is temporarily unavailable; retry shortly", 503, true},
		{"forbidden", fmt.Errorf("%w: agent alpha is disabled", fault.Forbidden), "invalid_client", "forbidden: agent alpha is disabled", 401, false},
		{"unauthenticated", fmt.Errorf("%w: certificate 0a was revoked", fault.Unauthenticated), "invalid_client", "unauthenticated: certificate 0a was revoked", 401, false},
		{"not found", fmt.Errorf("%w: no task t1", fault.NotFound), "invalid_client", "not found: no task t1", 401, false},
		{"invalid", fmt.Errorf("%w: renewal must use a new key", fault.Invalid), "invalid_request", "invalid request: renewal must use a new key", 400, false},
		{"an OAuth error passes through", fmt.Errorf("grant: %w", own), "invalid_scope", `scope "admin" is not allowed`, 400, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			oe := fromFault(c.err, "invalid_client")
			if oe.Code != c.code || oe.Description != c.desc || oe.Status() != c.status {
				t.Fatalf("got %s %q %d, want %s %q %d", oe.Code, oe.Description, oe.Status(), c.code, c.desc, c.status)
			}
			if strings.Contains(oe.Error(), "pq:") {
				t.Fatalf("the cause is in the OAuth error: %v", oe)
			}
			if (oe.cause != nil) != c.cause || (c.cause && !errors.Is(oe, c.err)) {
				t.Fatalf("cause = %v", oe.cause)
			}
		})
	}
}

// failingIDs is an identity service whose store fails with err. Only
// Authenticate is called on the path under test.
type failingIDs struct {
	Identities
	err error
}

func (f failingIDs) Authenticate(context.Context, *x509.Certificate) (peer.Principal, error) {
	return peer.Principal{}, f.err
}

type memRecorder struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (m *memRecorder) Record(_ context.Context, ev audit.Event) (audit.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evs = append(m.evs, ev)
	return ev, nil
}

// A store failing under client authentication answers server_error (500)
// or temporarily_unavailable (503) with a fixed text: the driver's words go
// to the log, not to the client, and the refusal is still on record.
func TestTokenEndpointHidesStoreErrors(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
		code   string
		desc   string
	}{
		{"unclassified", fmt.Errorf("identity: look up certificate: %s", sqlCause), 500, "server_error", "internal error"},
		{"unavailable", fmt.Errorf("%w: certificate status unknown: %s", fault.Unavailable, sqlCause), 503, "temporarily_unavailable", "the service is temporarily unavailable; retry shortly"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			rec := &memRecorder{}
			h := handlers{s: &Service{ids: failingIDs{err: c.err}, audit: rec}, logger: slog.New(slog.NewTextHandler(&logs, nil))}
			r := httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader("grant_type=client_credentials&resource=https%3A%2F%2Fapi.example"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
			w := httptest.NewRecorder()
			h.token(w, r)

			var body api.OAuthError
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if w.Code != c.status || body.Code != c.code || body.Description != c.desc {
				t.Fatalf("got %d %+v, want %d %s %q", w.Code, body, c.status, c.code, c.desc)
			}
			if strings.Contains(w.Body.String(), "pq:") {
				t.Fatalf("the store's error reached the client: %s", w.Body)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), sqlCause) || !strings.Contains(logs.String(), "path="+TokenPath) {
				t.Fatalf("the cause was not logged with the request: %q", logs.String())
			}
			if len(rec.evs) != 1 || rec.evs[0].Decision != audit.Deny {
				t.Fatalf("refusal not recorded: %+v", rec.evs)
			}
		})
	}
}
