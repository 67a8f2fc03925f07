// Package fault holds the kinds of failure that cross package boundaries.
//
// Domain packages wrap one of these sentinels with %w and a message that is
// safe to show the caller; the HTTP edge maps the kind to a status code in one
// place (httpx.WriteError). An error that wraps none of them is internal: the
// caller sees a generic message and the cause goes to the log.
package fault

import "errors"

// Kinds of failure.
var (
	// Invalid: the request is malformed or breaks a rule (400).
	Invalid = errors.New("invalid request")
	// Unauthenticated: no or bad credentials (401).
	Unauthenticated = errors.New("unauthenticated")
	// Forbidden: the caller is known but may not do this (403).
	Forbidden = errors.New("forbidden")
	// NotFound: the thing asked about does not exist (404).
	NotFound = errors.New("not found")
	// Conflict: the thing exists already or is in the wrong state (409).
	Conflict = errors.New("conflict")
	// TooLarge: the request body is over its limit (413).
	TooLarge = errors.New("request too large")
	// Unavailable: a dependency (store, audit log) failed; the request was
	// refused rather than served without it (503).
	Unavailable = errors.New("unavailable")
)
