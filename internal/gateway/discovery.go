package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// OAuth discovery per server, as MCP clients do it (MCP authorization,
// 2025-11-25 and 2026-07-28): a client asks for a token for the URL of
// the MCP server it talks to (RFC 8707 resource = https://GATEWAY/mcp/NAME)
// and looks for that resource's RFC 9728 metadata at the path-suffixed
// well-known URL (/.well-known/oauth-protected-resource/mcp/NAME) before the
// root one. So each server is a protected resource of its own,
// RESOURCE/mcp/NAME (RESOURCE/http/NAME for an HTTP API), beside the
// gateway's RESOURCE, and the gateway accepts a token for either: a token
// for one server's URL is refused at every other server.

// WellKnownResource is the RFC 9728 well-known path.
const WellKnownResource = "/.well-known/oauth-protected-resource"

// Route kinds, as the first path segment.
const (
	kindMCP  = "mcp"
	kindHTTP = "http"
)

// resourceBase is the gateway's resource without a trailing "/", or false
// when per-server resources cannot be formed from it (a query).
func (g *Gateway) resourceBase() (string, bool) {
	base := strings.TrimRight(g.cfg.Resource, "/")
	if !strings.Contains(base, "://") || strings.ContainsAny(base, "?#") {
		return "", false
	}
	return base, true
}

// serverResource is the resource identifier of a server of the gateway:
// RESOURCE/mcp/NAME (kind "mcp") or RESOURCE/http/NAME (kind "http"). It
// is false for a name that is not a valid server name, or when the
// gateway's resource has a query.
func (g *Gateway) serverResource(kind, name string) (string, bool) {
	base, ok := g.resourceBase()
	if !ok || (kind != kindMCP && kind != kindHTTP) || policy.ValidateName("server name", name) != nil {
		return "", false
	}
	return base + "/" + kind + "/" + name, true
}

// metadataURL is where RFC 9728 §3.1 puts the metadata of resource: the
// well-known path inserted between the authority and the path.
func metadataURL(resource string) string {
	scheme, rest, _ := strings.Cut(resource, "://")
	authority, path, _ := strings.Cut(rest, "/")
	u := scheme + "://" + authority + WellKnownResource
	if path = strings.TrimSuffix(path, "/"); path != "" {
		u += "/" + path
	}
	return u
}

// routeTarget is the kind and server name a gateway path routes to, read
// the way Handler routes: /mcp/NAME (all the rest is the name) and
// /http/NAME/....
func routeTarget(escapedPath string) (kind, name string, ok bool) {
	if name, ok := strings.CutPrefix(escapedPath, "/mcp/"); ok {
		return kindMCP, name, true
	}
	if rest, ok := strings.CutPrefix(escapedPath, "/http/"); ok {
		name, _, _ := strings.Cut(rest, "/")
		return kindHTTP, name, true
	}
	return "", "", false
}

// serveServerMetadata answers GET and HEAD of a server's protected
// resource metadata, WellKnownResource + RESOURCE's path + /mcp/NAME or
// /http/NAME, and reports whether the request was one. Like the root
// document it needs no client certificate. It is served for any valid
// server name, configured or not, so that it tells no one which servers
// exist (a request to /mcp/NAME is authenticated before the name is
// looked up, for the same reason).
func (g *Gateway) serveServerMetadata(w http.ResponseWriter, r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), WellKnownResource+"/")
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	resource, name, ok := g.metadataTarget("/" + rest)
	if !ok {
		g.fail(w, r, fmt.Errorf("%w: no protected resource metadata here: servers' are at %s/mcp/NAME and %s/http/NAME", fault.NotFound, WellKnownResource, WellKnownResource))
		return true
	}
	md := map[string]any{
		"resource":                 resource,
		"bearer_methods_supported": []string{"header"},
		"resource_name":            fmt.Sprintf("%s on Bulkhead gateway %s", name, g.cfg.Name),
		"tls_client_certificate_bound_access_tokens": true,
	}
	if g.deps.AuthorizationServer != "" {
		md["authorization_servers"] = []string{g.deps.AuthorizationServer}
	}
	httpx.WriteJSON(w, http.StatusOK, md)
	return true
}

// SetAuthorizationServer sets the issuer URL the protected resource
// metadata names, for a gateway built before the control plane's address
// is known (bulkhead serve --gateway). Call it before serving.
func (g *Gateway) SetAuthorizationServer(issuer string) { g.deps.AuthorizationServer = issuer }

// metadataTarget maps the path after the well-known prefix (RESOURCE's
// path, then /mcp/NAME or /http/NAME) to the server's resource and name.
func (g *Gateway) metadataTarget(p string) (resource, name string, ok bool) {
	base, ok := g.resourceBase()
	if !ok {
		return "", "", false
	}
	_, rest, _ := strings.Cut(base, "://")
	if _, basePath, found := strings.Cut(rest, "/"); found {
		if p, ok = strings.CutPrefix(p, "/"+basePath); !ok {
			return "", "", false
		}
	}
	kind, name, ok := routeTarget(p)
	if !ok || p != "/"+kind+"/"+name {
		return "", "", false
	}
	resource, ok = g.serverResource(kind, name)
	return resource, name, ok
}

// resourceMetadataURL is the metadata a 401 for r points to: the server's
// for /mcp/NAME and /http/NAME/..., else the gateway's.
func (g *Gateway) resourceMetadataURL(r *http.Request) string {
	if kind, name, ok := routeTarget(r.URL.EscapedPath()); ok {
		if res, ok := g.serverResource(kind, name); ok {
			return metadataURL(res)
		}
	}
	return strings.TrimRight(g.cfg.Resource, "/") + WellKnownResource
}

type serverAudienceKey struct{}

// withServerAudience lets the Verifier accept, for this request only, a
// token for the server it is addressed to: RESOURCE/mcp/NAME on /mcp/NAME
// to an MCP server of this gateway, RESOURCE/http/NAME on /http/NAME/... to
// an HTTP API. Any other path accepts only the gateway's resource.
func (g *Gateway) withServerAudience(r *http.Request) *http.Request {
	kind, name, ok := routeTarget(r.URL.EscapedPath())
	if !ok {
		return r
	}
	rt := g.servers[name]
	if rt == nil || (kind == kindMCP) != (rt.cfg.MCP != nil) {
		return r
	}
	aud, ok := g.serverResource(kind, name)
	if !ok {
		return r
	}
	return r.WithContext(WithServerAudience(r.Context(), aud))
}

// WithServerAudience returns ctx carrying the one per-server audience that
// Verifier.Verify accepts besides its own.
func WithServerAudience(ctx context.Context, aud string) context.Context {
	return context.WithValue(ctx, serverAudienceKey{}, aud)
}

func serverAudience(ctx context.Context) string {
	aud, _ := ctx.Value(serverAudienceKey{}).(string)
	return aud
}
