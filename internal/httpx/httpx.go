// Package httpx is the HTTP edge shared by Bulkhead's servers: bounded JSON
// decoding, JSON responses, the one place where error kinds become status
// codes, and loopback-only listeners.
package httpx

import (
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
)

// DefaultMaxBody bounds request bodies unless a handler says otherwise.
const DefaultMaxBody = 64 << 10

// DecodeJSON decodes exactly one JSON value of at most maxBytes into v,
// refusing unknown fields. Errors wrap fault.TooLarge or fault.Invalid.
func DecodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	body := http.MaxBytesReader(w, r.Body, maxBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, maxBytes)
		}
		return fmt.Errorf("%w: body is not valid JSON for this request: %w", fault.Invalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: body is over %d bytes", fault.TooLarge, maxBytes)
		}
		return fmt.Errorf("%w: body holds more than one JSON value", fault.Invalid)
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

// kinds maps each fault kind to its status and code, most specific first.
var kinds = []struct {
	err    error
	status int
	code   string
}{
	{fault.Invalid, http.StatusBadRequest, "invalid_request"},
	{fault.Unauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{fault.Forbidden, http.StatusForbidden, "forbidden"},
	{fault.NotFound, http.StatusNotFound, "not_found"},
	{fault.Conflict, http.StatusConflict, "conflict"},
	{fault.TooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	{fault.Unavailable, http.StatusServiceUnavailable, "unavailable"},
}

// Status returns the HTTP status and code for err.
func Status(err error) (int, string) {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.status, k.code
		}
	}
	return http.StatusInternalServerError, "internal"
}

// WriteError writes err as an api.Error. Errors of a known kind carry their
// own message, which domain packages keep free of secrets; anything else is
// logged and answered with a generic message, so internal detail (SQL, file
// paths) never reaches the caller.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	status, code := Status(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	} else if status == http.StatusServiceUnavailable {
		logger.Error("request refused: dependency unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bulkhead"`)
	}
	WriteJSON(w, status, api.Error{Code: code, Message: msg})
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
