package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bulkhead-dev/bulkhead/internal/canonpath"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// Route bodies: what a route's request body is, and so how the gateway
// reads it for policy and what it forwards.
const (
	bodyJSON   = "json"   // application/json: parsed strictly, forwarded canonical
	bodyForm   = "form"   // application/x-www-form-urlencoded: parsed, forwarded canonical
	bodyNone   = "none"   // no body at all
	bodyOpaque = "opaque" // any type, forwarded as is; policy sees its size and SHA-256
)

// matchRoute finds the route for method and the path's decoded segments,
// and its parameters. Unmapped paths match nothing: deny by default.
func matchRoute(routes []Route, method string, segs []string) (*Route, map[string]string) {
	for i := range routes {
		r := &routes[i]
		if r.Method != method {
			continue
		}
		// Only the leading slash is dropped: "/a/" and "/a" are different
		// paths to an upstream, so they are to the route table too.
		tmpl := strings.Split(strings.TrimPrefix(r.Path, "/"), "/")
		if len(tmpl) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for j, t := range tmpl {
			switch {
			case strings.HasPrefix(t, "{"):
				if segs[j] == "" {
					ok = false
				}
				params[strings.Trim(t, "{}")] = segs[j]
			case t != segs[j]:
				ok = false
			}
			if !ok {
				break
			}
		}
		if ok {
			return r, params
		}
	}
	return nil, nil
}

// serveHTTP authorizes and forwards a REST call: method and path template
// become the Cedar action and Route resource; path parameters, query and
// the body (as the route declares it) become context.input. What is
// forwarded is the canonical form of exactly what the policy saw: the
// path, the query and a JSON or form body re-encoded from their parsed
// values.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime, rest string) {
	s := rt.cfg
	if s.HTTP == nil {
		g.fail(w, r, fmt.Errorf("%w: server %s is an MCP server: use /mcp/%s", fault.NotFound, s.Name, s.Name))
		return
	}
	refuse := func(target string, err error, detail map[string]string) {
		detail["server"] = s.Name
		g.recordRefusal(r.Context(), c, "gateway.http", target, err.Error(), detail)
		g.fail(w, r, err)
	}
	server := policy.ToolServer(s.Name).String()
	p, err := canonpath.HTTP(rest)
	if err != nil {
		// Never forwarded: an upstream might read another path in it.
		refuse(server, fmt.Errorf("%w: %w", fault.Invalid, err), map[string]string{"path": truncate(rest, 256)})
		return
	}
	route, params := matchRoute(s.HTTP.Routes, r.Method, p.Segments)
	if route == nil {
		refuse(server, fmt.Errorf("%w: %s %s is not a route of %s", fault.Forbidden, r.Method, truncate(p.Canonical, 256), s.Name),
			map[string]string{"path": truncate(p.Canonical, 256)})
		return
	}
	resource := policy.Route(s.Name, route.Name)
	detail := map[string]string{"route": route.Name, "path": p.Canonical}
	query, err := canonicalQuery(r.URL.RawQuery)
	if err != nil {
		refuse(resource.String(), fmt.Errorf("%w: query: %w", fault.Invalid, err), detail)
		return
	}
	if err := checkContentType(r.Header, route.Body, false); err != nil {
		refuse(resource.String(), err, detail)
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBody))
	if err != nil {
		g.fail(w, r, fmt.Errorf("%w: request body over %d bytes", fault.TooLarge, g.cfg.Limits.MaxBody))
		return
	}
	body, err := g.routeBody(r.Header, route.Body, raw)
	if err != nil {
		refuse(resource.String(), err, detail)
		return
	}
	in := strictjson.MakeObject().With("params", stringsObject(params)).With("query", query.value)
	if body.value.Exists() {
		in = in.With("body", body.value)
	}
	input := in.Encode()
	auth, rf := g.authorize(r.Context(), c, action{server: s, name: r.Method, resource: resource, input: input,
		metered: true, detail: detail})
	if rf != nil {
		g.fail(w, r, decisionError(rf))
		return
	}
	target := rt.target + p.Canonical
	if query.encoded != "" {
		target += "?" + query.encoded
	}
	g.forward(w, r, c, rt, outbound{method: r.Method, target: target, body: body.forward, contentType: body.contentType, recorded: auth.record, spend: auth.spend,
		standing: standing{server: s.Name, action: r.Method, resource: resource, input: input, decisionID: auth.decisionID, grants: auth.granted}}, nil)
}

// decisionError is a refusal's error, naming the decision for the agent.
func decisionError(rf *refusal) error {
	if rf.decisionID == "" {
		return rf.err
	}
	return fmt.Errorf("%w (decision %s)", rf.err, rf.decisionID)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// checkContentType refuses a request whose Content-Type is not the one
// kind declares: a body the policy cannot read as the upstream will must
// not pass. JSON and form types are accepted only in their exact lower-case
// form (with at most charset=utf-8), since upstreams differ on which
// variants they parse. Without a type, only an empty body may pass, unless
// required.
func checkContentType(h http.Header, kind string, required bool) error {
	vs := h.Values("Content-Type")
	if len(vs) > 1 {
		return fmt.Errorf("%w: more than one Content-Type", fault.Unsupported)
	}
	if len(vs) == 0 {
		if required {
			return fmt.Errorf("%w: Content-Type must be application/json", fault.Unsupported)
		}
		return nil
	}
	ct := vs[0]
	exact := func(want string) error {
		for _, ok := range []string{want, want + "; charset=utf-8", want + ";charset=utf-8"} {
			if ct == ok {
				return nil
			}
		}
		return fmt.Errorf("%w: Content-Type %.64q is not accepted here; send %s", fault.Unsupported, ct, want)
	}
	switch kind {
	case bodyJSON:
		return exact("application/json")
	case bodyForm:
		return exact("application/x-www-form-urlencoded")
	case bodyNone:
		return fmt.Errorf("%w: this route takes no body", fault.Unsupported)
	case bodyOpaque:
		if _, _, err := mime.ParseMediaType(ct); err != nil {
			return fmt.Errorf("%w: Content-Type %.64q is malformed", fault.Unsupported, ct)
		}
		return nil
	}
	return fmt.Errorf("%w: route body %q", fault.Unsupported, kind)
}

// routeBody is a request body as policy sees it and as it is forwarded.
type routeBody struct {
	value       strictjson.Value // context.input.body; zero for none
	forward     []byte           // nil for no body
	contentType string
}

// routeBody reads raw as the route's body kind declares.
func (g *Gateway) routeBody(h http.Header, kind string, raw []byte) (routeBody, error) {
	if len(raw) == 0 {
		return routeBody{}, nil
	}
	if h.Get("Content-Type") == "" {
		return routeBody{}, fmt.Errorf("%w: a body needs a Content-Type", fault.Unsupported)
	}
	if kind != bodyOpaque && int64(len(raw)) > g.cfg.Limits.MaxInput {
		return routeBody{}, fmt.Errorf("%w: a body over %d bytes cannot be checked by policy", fault.TooLarge, g.cfg.Limits.MaxInput)
	}
	switch kind {
	case bodyJSON:
		v, err := strictjson.Parse(raw, strictjson.Limits{MaxDepth: maxDepth})
		if err != nil {
			return routeBody{}, fmt.Errorf("%w: body: %w", fault.Invalid, err)
		}
		return routeBody{value: v, forward: v.Encode(), contentType: "application/json"}, nil
	case bodyForm:
		q, err := canonicalQuery(string(raw))
		if err != nil {
			return routeBody{}, fmt.Errorf("%w: form body: %w", fault.Invalid, err)
		}
		return routeBody{value: q.value, forward: []byte(q.encoded), contentType: "application/x-www-form-urlencoded"}, nil
	case bodyOpaque:
		sum := sha256.Sum256(raw)
		v := strictjson.MakeObject().With("sha256", strictjson.MakeString(hex.EncodeToString(sum[:])))
		n, _ := strictjson.Parse([]byte(strconv.Itoa(len(raw))), strictjson.Limits{})
		return routeBody{value: v.With("size", n), forward: raw, contentType: h.Get("Content-Type")}, nil
	}
	return routeBody{}, fmt.Errorf("%w: this route takes no body", fault.Unsupported)
}

// query is a query string (or form body) as policy sees it and as it is
// forwarded.
type query struct {
	value   strictjson.Value // an object of strings
	encoded string           // the canonical encoding, "" for none
}

// canonicalQuery parses a query string the way form parsers agree on, and
// refuses what they do not agree on: a repeated name (first-wins in some
// parsers, last-wins or a list in others), names that differ only in case
// (equal to some frameworks), ';' (a separator to some), malformed
// escapes, invalid UTF-8 and control characters. The canonical encoding
// keeps the pairs' order.
func canonicalQuery(raw string) (query, error) {
	if raw == "" {
		return query{value: strictjson.MakeObject()}, nil
	}
	if strings.Contains(raw, ";") {
		return query{}, errors.New("';' is not a separator here; encode it as %3B")
	}
	var (
		enc     []string
		members []strictjson.Member
	)
	seen := map[string]string{}
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		k, val, _ := strings.Cut(pair, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(val)
		if err1 != nil || err2 != nil {
			return query{}, fmt.Errorf("malformed escape in %.64q", pair)
		}
		for _, s := range []string{dk, dv} {
			if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return query{}, fmt.Errorf("invalid UTF-8 or control character in %.64q", pair)
			}
		}
		f := strictjson.Fold(dk)
		if prev, dup := seen[f]; dup {
			if prev == dk {
				return query{}, fmt.Errorf("%.64q appears more than once", dk)
			}
			return query{}, fmt.Errorf("%.64q and %.64q differ only in case", prev, dk)
		}
		seen[f] = dk
		members = append(members, strictjson.Member{Key: dk, Value: strictjson.MakeString(dv)})
		enc = append(enc, queryEscape(dk)+"="+queryEscape(dv))
	}
	return query{value: strictjson.MakeObject(members...), encoded: strings.Join(enc, "&")}, nil
}

// queryEscape escapes s for a query: a space as %20, never '+', which
// not every parser reads as a space.
func queryEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// stringsObject makes an object of string members, sorted by key.
func stringsObject(m map[string]string) strictjson.Value {
	members := make([]strictjson.Member, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		members = append(members, strictjson.Member{Key: k, Value: strictjson.MakeString(m[k])})
	}
	return strictjson.MakeObject(members...)
}
