// Package httpx is the HTTP edge shared by Bulkhead's servers: bounded JSON
// decoding, JSON responses, the one place where error kinds become status
// codes and client texts (Problem, WriteError), and loopback-only
// listeners.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// DefaultMaxBody bounds request bodies unless a handler says otherwise.
const DefaultMaxBody = 64 << 10

// DecodeJSON decodes exactly one JSON value of at most maxBytes into v,
// strictly (see UnmarshalJSON). Errors wrap fault.TooLarge or
// fault.Invalid.
func DecodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			return fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, maxBytes)
		}
		return fmt.Errorf("%w: cannot read the body", fault.Invalid)
	}
	return UnmarshalJSON(b, 0, v)
}

// UnmarshalJSON decodes b, exactly one JSON value, into v. It is first
// parsed by strictjson (nesting bounded by maxDepth, or strictjson's
// default), so duplicate keys, keys that differ only in case, invalid
// UTF-8 and lone surrogates are refused rather than resolved the way
// encoding/json happens to; then decoded refusing unknown fields.
func UnmarshalJSON(b []byte, maxDepth int, v any) error {
	if _, err := strictjson.Parse(b, strictjson.Limits{MaxDepth: maxDepth}); err != nil {
		if errors.Is(err, strictjson.ErrTrailing) {
			return fmt.Errorf("%w: body holds more than one JSON value", fault.Invalid)
		}
		return fmt.Errorf("%w: body is not valid JSON for this request: %w", fault.Invalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body is not valid JSON for this request: %w", fault.Invalid, err)
	}
	return nil
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Fixed texts for failures that are the server's, not the caller's: the
// cause (SQL, driver, file and upstream detail) goes to the log only.
const (
	unavailableText = "the service is temporarily unavailable; retry shortly"
	upstreamText    = "upstream server unavailable"
	internalText    = "internal error"
)

// kinds maps each fault kind to its status, its code and, for the server's
// own failures, the fixed text the caller sees instead of the error. It is
// the one table every surface maps errors through (WriteError, Problem).
// Server kinds come first: an error that wraps a dependency failure
// anywhere in its chain may carry the dependency's text, so the fixed text
// wins even if a client kind is wrapped around it.
var kinds = []struct {
	err    error
	status int
	code   string
	text   string // "": the error's own message, which is safe to show
}{
	{fault.Unavailable, http.StatusServiceUnavailable, "unavailable", unavailableText},
	{fault.Upstream, http.StatusBadGateway, "upstream", upstreamText},
	{fault.Invalid, http.StatusBadRequest, "invalid_request", ""},
	{fault.Unauthenticated, http.StatusUnauthorized, "unauthenticated", ""},
	{fault.Forbidden, http.StatusForbidden, "forbidden", ""},
	{fault.NotFound, http.StatusNotFound, "not_found", ""},
	{fault.MethodNotAllowed, http.StatusMethodNotAllowed, "method_not_allowed", ""},
	{fault.Conflict, http.StatusConflict, "conflict", ""},
	{fault.TooLarge, http.StatusRequestEntityTooLarge, "too_large", ""},
	{fault.Unsupported, http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
	// "budget" is the code gateway clients already know for a budget or
	// rate limit refusal.
	{fault.Exhausted, http.StatusTooManyRequests, "budget", ""},
}

// Problem returns the HTTP status, the stable code and the text to show
// the caller for err: the error's own message for a caller's mistake (a
// kind from 400 to 429, whose messages domain packages keep free of
// secrets and internals), a fixed text for the server's own failures
// (fault.Unavailable, fault.Upstream, and anything wrapping no kind, which
// is 500 "internal"). It is what WriteError writes, for surfaces with
// another envelope (OAuth errors, JSON-RPC) to map errors the same way;
// such a surface logs err itself when status is 500 or more.
func Problem(err error) (status int, code, clientText string) {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			if k.text != "" {
				return k.status, k.code, k.text
			}
			return k.status, k.code, err.Error()
		}
	}
	return http.StatusInternalServerError, "internal", internalText
}

// Status returns the HTTP status and code for err.
func Status(err error) (int, string) {
	status, code, _ := Problem(err)
	return status, code
}

// WriteError writes err as an api.Error with the status, code and text of
// Problem. When the failure is the server's (status 500 or more) the cause
// is logged at Error with the method and path, since the caller sees only
// a fixed text. Headers already set on w (Allow, Retry-After, a specific
// WWW-Authenticate challenge) are kept.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	status, code, text := Problem(err)
	if status >= http.StatusInternalServerError {
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", code, "err", err)
	}
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bulkhead"`)
	}
	WriteJSON(w, status, api.Error{Code: code, Message: text})
}

// LoopbackHost reports whether host (no port) names the loopback interface.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// ListenLoopback binds addr, which must name the loopback interface, and
// checks that the address actually bound is loopback ("localhost" could
// resolve elsewhere on a strange host). why says, in an error, why only
// loopback is allowed.
func ListenLoopback(addr, why string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if !LoopbackHost(host) {
		return nil, fmt.Errorf("refusing to listen on %q: %s, so it serves only on loopback (127.0.0.1, [::1] or localhost)", addr, why)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		_ = ln.Close()
		return nil, fmt.Errorf("%s bound %s, which is not loopback; refusing to serve", addr, ln.Addr())
	}
	return ln, nil
}
