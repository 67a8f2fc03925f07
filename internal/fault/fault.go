// Package fault holds the kinds of failure that cross package boundaries.
//
// Domain packages wrap one of these sentinels with %w and a message. The
// HTTP edge maps the kind to a status, a code and a client text in one
// table (httpx.Problem, used by httpx.WriteError and by any surface with
// its own envelope), and the kinds split in two:
//
//   - The caller's mistakes (Invalid, Unauthenticated, Forbidden, NotFound,
//     MethodNotAllowed, Conflict, TooLarge, Unsupported, Exhausted) are
//     answered with the error's own message, so it must tell the caller
//     what to fix. That message is a contract: it carries no secret (no
//     token, key or credential value) and no internal detail (no SQL,
//     driver, file path or upstream response); wrap such a cause in a
//     server kind instead, or keep it out of the message.
//   - The server's failures (Unavailable, Upstream, and any error that wraps
//     none of these kinds, which is internal) are answered with a fixed
//     text, and the cause goes to the log. Their messages may say anything.
//
// If an error wraps kinds of both sides, the server's wins.
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
	// MethodNotAllowed: the path exists but not with this method (405);
	// the caller sets the Allow header.
	MethodNotAllowed = errors.New("method not allowed")
	// Conflict: the thing exists already or is in the wrong state (409).
	Conflict = errors.New("conflict")
	// TooLarge: the request body is over its limit (413).
	TooLarge = errors.New("request too large")
	// Unsupported: the request body's media type is not accepted (415).
	Unsupported = errors.New("unsupported media type")
	// Exhausted: a budget or rate limit refused the request (429); the
	// caller may set Retry-After.
	Exhausted = errors.New("budget exhausted")
	// Upstream: the server behind a gateway failed or could not be
	// reached (502). Server side: the caller sees a fixed text.
	Upstream = errors.New("upstream failed")
	// Unavailable: a dependency (store, audit log) failed; the request was
	// refused rather than served without it (503). Server side: the caller
	// sees a fixed text.
	Unavailable = errors.New("unavailable")
)
