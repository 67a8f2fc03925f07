package token

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzParse feeds arbitrary strings to the access token parser: it must
// never panic and never accept a token without a key.
func FuzzParse(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		if _, err := Parse(raw, func(string) (any, bool) { return nil, false }); err == nil {
			t.Fatal("accepted a token with no key to verify it")
		}
	})
}

// FuzzParseForm feeds arbitrary bodies and content types to the OAuth form
// parser, which guards every OAuth endpoint.
func FuzzParseForm(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "grant_type=client_credentials&resource=https%3A%2F%2Fx")
	f.Add("application/x-www-form-urlencoded", "a=1&a=2")
	f.Add("application/json", "{}")
	f.Add("application/x-www-form-urlencoded; charset=utf-8", "%zz")
	f.Fuzz(func(t *testing.T, ctype, body string) {
		req := httptest.NewRequest(http.MethodPost, "/oauth2/token", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", ctype)
		form, oe := ParseForm(httptest.NewRecorder(), req)
		if oe != nil {
			if oe.Code != "invalid_request" {
				t.Fatalf("code %s", oe.Code)
			}
			return
		}
		for k, v := range form {
			if len(v) != 1 {
				t.Fatalf("parameter %q repeated yet accepted", k)
			}
		}
	})
}
