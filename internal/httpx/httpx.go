// Package httpx is the HTTP edge shared by Bulkhead's servers: bounded JSON
// decoding, JSON responses, and the one place where error kinds become status
// codes.
package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

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
