package token

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// maxChildSegments bounds how far below a registered resource a token's
// audience may reach (a gateway's per-server URLs are two segments down:
// /mcp/NAME, /http/NAME).
const maxChildSegments = 8

// maxResourceLen bounds a resource URI, registered or asked for.
const maxResourceLen = 512

// Covers reports whether registered, a registered resource, covers
// requested, a resource indicator (RFC 8707) a client asked a token for:
// requested is registered itself, or a path child of it.
//
// The comparison is by path segment on the URI exactly as written, with no
// normalization (RFC 3986 §6.2.1, simple string comparison): requested must
// begin with registered (less any trailing "/") followed by "/", and the
// rest must be one to maxChildSegments segments of unreserved characters
// (A-Z a-z 0-9 - . _ ~), none of them "." or "..". So
// https://gw.example/mcp/files is under https://gw.example, but
// https://gw.example.evil/mcp, https://gw.example@evil/, https://gw.example:8443/x,
// https://GW.example/x, https://gw.example/mcpx (under https://gw.example/mcp),
// https://gw.example/mcp/../admin, https://gw.example/mcp/%2e%2e,
// https://gw.example/mcp//x, https://gw.example/mcp/x/ and anything with a
// query or fragment are not. A registered URI that has no authority
// (urn:...) or has a query or fragment covers only itself.
func Covers(registered, requested string) bool {
	if registered == "" || requested == "" || len(requested) > maxResourceLen {
		return false
	}
	if requested == registered {
		return true
	}
	base, ok := childBase(registered)
	if !ok {
		return false
	}
	rest, ok := strings.CutPrefix(requested, base+"/")
	if !ok {
		return false
	}
	segs := strings.Split(rest, "/")
	if len(segs) > maxChildSegments {
		return false
	}
	for _, seg := range segs {
		if !unreservedSegment(seg) {
			return false
		}
	}
	return true
}

// childBase is registered without a trailing "/", if registered is a
// hierarchical URI (scheme://authority[/path]) without query or fragment,
// whose path is made of plain segments: only such a URI has children.
func childBase(registered string) (string, bool) {
	scheme, rest, ok := strings.Cut(registered, "://")
	if !ok || scheme == "" || strings.ContainsAny(registered, "?#") {
		return "", false
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", false
		}
	}
	authority, path, _ := strings.Cut(rest, "/")
	// No user info (it would let "https://gw.example@evil" read as a
	// child of something), no empty host.
	if authority == "" || strings.ContainsAny(authority, "@\\ ") {
		return "", false
	}
	path = strings.TrimSuffix(path, "/")
	if path != "" {
		for _, seg := range strings.Split(path, "/") {
			if !unreservedSegment(seg) {
				return "", false
			}
		}
	}
	return strings.TrimSuffix(registered, "/"), true
}

// unreservedSegment reports whether seg is a non-empty path segment of
// RFC 3986 unreserved characters that is not a dot segment.
func unreservedSegment(seg string) bool {
	if seg == "" || seg == "." || seg == ".." {
		return false
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// ancestors lists the URIs that could be registered resources covering
// requested, nearest first: each proper path prefix ending at a segment
// boundary, without and with a trailing "/".
func ancestors(requested string) []string {
	_, rest, ok := strings.Cut(requested, "://")
	if !ok || strings.ContainsAny(requested, "?#") {
		return nil
	}
	start := len(requested) - len(rest)
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return nil
	}
	pathStart := start + slash
	var out []string
	for i := len(requested) - 1; i >= pathStart && len(out) < 2*maxChildSegments; i-- {
		if requested[i] != '/' || i == len(requested)-1 {
			continue
		}
		out = append(out, requested[:i], requested[:i+1])
	}
	return out
}

// target resolves the resource a token is asked for: a registered resource,
// or the nearest registered resource that covers it (see Covers). The
// Resource returned names what was asked for, with the registered one's
// scopes; registered is the registration that allowed it.
func (s *Service) target(ctx context.Context, uri string) (res Resource, registered string, err error) {
	res, err = s.resource(ctx, uri)
	var oe *Error
	if err == nil || !errors.As(err, &oe) || oe.Code != "invalid_target" || uri == "" {
		return res, uri, err
	}
	notRegistered := err
	for _, a := range ancestors(uri) {
		if !Covers(a, uri) {
			continue
		}
		parent, err := s.resource(ctx, a)
		if errors.As(err, &oe) && oe.Code == "invalid_target" {
			continue
		}
		if err != nil {
			return Resource{}, "", err
		}
		parent.URI = uri
		return parent, a, nil
	}
	return Resource{}, "", notRegistered
}

// scopeCacheTTL is how long the scopes_supported list is reused.
const scopeCacheTTL = 30 * time.Second

// scopeCache holds the union of the registered resources' scopes.
type scopeCache struct {
	scopes []string
	at     time.Time
	valid  bool
}

// scopesSupported is the union of the scopes that registered resources
// name, sorted, for the metadata's scopes_supported; nil when none names
// any or the store cannot be read (the list is advisory: RFC 8414 lets a
// server leave scopes out).
func (s *Service) scopesSupported(ctx context.Context) []string {
	now := s.clock.Now()
	s.resMu.Lock()
	c := s.scopeCache
	s.resMu.Unlock()
	if c.valid && now.Sub(c.at) < scopeCacheTTL && now.Sub(c.at) >= 0 {
		return c.scopes
	}
	list, err := s.store.ListResources(ctx)
	if err != nil {
		s.logger.Warn("metadata: cannot list resources for scopes_supported; leaving it out", "err", err)
		return nil
	}
	var scopes []string
	for _, r := range list {
		scopes = append(scopes, r.Scopes...)
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	if len(scopes) == 0 {
		scopes = nil
	}
	s.resMu.Lock()
	s.scopeCache = scopeCache{scopes: scopes, at: now, valid: true}
	s.resMu.Unlock()
	return scopes
}

// forgetResources drops cached registrations after a change.
func (s *Service) forgetResources(uri string) {
	s.resMu.Lock()
	delete(s.resources, uri)
	s.scopeCache = scopeCache{}
	s.resMu.Unlock()
}
