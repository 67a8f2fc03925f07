package ca

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// PKCS11URI says where keys live in a PKCS#11 token (RFC 7512):
//
//	pkcs11:token=LABEL[;object=PREFIX]?module-path=/path/to/lib.so[&pin-source=file:/path|env:NAME]
//
// Keys are the token's objects labelled PREFIX + name ("bulkhead-root",
// "bulkhead-intermediate" by default). The PIN comes from pin-source, or
// the environment variable BULKHEAD_PKCS11_PIN: never from the URI
// itself, which is logged and shown.
type PKCS11URI struct {
	Token, Object, Module, PINSource string
}

// DefaultPINEnv holds the token's PIN when the URI names no pin-source.
const DefaultPINEnv = "BULKHEAD_PKCS11_PIN"

// ParsePKCS11URI parses a PKCS#11 URI as the CA takes it.
func ParsePKCS11URI(s string) (PKCS11URI, error) {
	bad := func(format string, args ...any) (PKCS11URI, error) {
		return PKCS11URI{}, fmt.Errorf("ca: PKCS#11 URI: "+format, args...)
	}
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return bad("must start with pkcs11:")
	}
	path, query, _ := strings.Cut(rest, "?")
	u := PKCS11URI{Object: "bulkhead-"}
	// Path attributes (;-separated) and query attributes (&-separated)
	// have names of their own; each may appear once.
	fields := map[string]*string{";token": &u.Token, ";object": &u.Object, "?module-path": &u.Module, "?pin-source": &u.PINSource}
	seen := map[string]bool{}
	for _, sec := range []struct{ kind, list, sep, names string }{
		{";", path, ";", "path attribute %q is not supported (token, object)"},
		{"?", query, "&", "query attribute %q is not supported (module-path, pin-source)"},
	} {
		if sec.list == "" {
			continue
		}
		for _, part := range strings.Split(sec.list, sec.sep) {
			if part == "" && sec.kind == ";" {
				continue
			}
			k, v, ok := strings.Cut(part, "=")
			switch {
			case !ok || k == "":
				return bad("attribute %q is not name=value", part)
			case sec.kind == "?" && k == "pin-value":
				return bad("pin-value would put the PIN in the URI; use pin-source=file:PATH or env:NAME, or %s", DefaultPINEnv)
			case fields[sec.kind+k] == nil:
				return bad(sec.names, k)
			}
			if seen[sec.kind+k] {
				return bad("attribute %q appears twice", k)
			}
			seen[sec.kind+k] = true
			v, err := url.PathUnescape(v)
			if err != nil {
				return bad("attribute %q: %v", k, err)
			}
			*fields[sec.kind+k] = v
		}
	}
	switch {
	case u.Token == "":
		return bad("token= is required")
	case u.Module == "":
		return bad("module-path= is required (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)")
	case u.PINSource != "" && !strings.HasPrefix(u.PINSource, "file:") && !strings.HasPrefix(u.PINSource, "env:"):
		return bad("pin-source must be file:PATH or env:NAME")
	}
	return u, nil
}

// PIN reads the token's PIN from its source.
func (u PKCS11URI) PIN() (string, error) {
	src := u.PINSource
	if src == "" {
		src = "env:" + DefaultPINEnv
	}
	if name, ok := strings.CutPrefix(src, "env:"); ok {
		pin, ok := os.LookupEnv(name)
		if !ok || pin == "" {
			return "", fmt.Errorf("ca: PKCS#11 PIN: environment variable %s is not set", name)
		}
		return pin, nil
	}
	b, err := os.ReadFile(strings.TrimPrefix(src, "file:"))
	if err != nil {
		return "", fmt.Errorf("ca: PKCS#11 PIN: %w", err)
	}
	pin := strings.TrimRight(string(b), "\r\n")
	if pin == "" {
		return "", errors.New("ca: PKCS#11 PIN: the PIN file is empty")
	}
	return pin, nil
}

// String is u as a URI ParsePKCS11URI reads back.
func (u PKCS11URI) String() string {
	s := "pkcs11:token=" + url.PathEscape(u.Token) + ";object=" + url.PathEscape(u.Object) + "?module-path=" + url.PathEscape(u.Module)
	if u.PINSource != "" {
		s += "&pin-source=" + url.PathEscape(u.PINSource)
	}
	return s
}
