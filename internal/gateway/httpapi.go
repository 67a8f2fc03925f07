package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// matchRoute finds the route for method and path and its parameters.
// Unmapped paths match nothing: deny by default.
func matchRoute(routes []Route, method, path string) (*Route, map[string]string) {
	// Only the leading slash is dropped: "/a/" and "/a" are different
	// paths to an upstream, so they are to the route table too.
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := range routes {
		r := &routes[i]
		if r.Method != method {
			continue
		}
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
// become the Cedar action and Route resource; path parameters, query and a
// JSON body (within limits) become context.input.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime) {
	s := rt.cfg
	if s.HTTP == nil {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("server %s is an MCP server: use /mcp/%s", s.Name, s.Name))
		return
	}
	rest := "/" + r.PathValue("rest")
	// Reject paths that an upstream might normalize into another route.
	if strings.Contains(rest, "//") || strings.Contains(rest, "/../") || strings.HasSuffix(rest, "/..") || strings.Contains(rest, "/./") ||
		strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") {
		writeError(w, http.StatusBadRequest, "invalid_request", "path is not in canonical form")
		return
	}
	route, params := matchRoute(s.HTTP.Routes, r.Method, rest)
	if route == nil {
		g.recordRefusal(r.Context(), c, "gateway.http", policy.ToolServer(s.Name).String(),
			fmt.Sprintf("%s %s matches no route of %s", r.Method, rest, s.Name), map[string]string{"server": s.Name})
		writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s %s is not a route of %s", r.Method, rest, s.Name))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body over %d bytes", g.cfg.Limits.MaxBody))
		return
	}
	input, err := g.routeInput(r, params, body)
	if err != nil {
		g.recordRefusal(r.Context(), c, "gateway."+r.Method, policy.Route(s.Name, route.Name).String(), err.Error(), map[string]string{"server": s.Name})
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	resource := policy.Route(s.Name, route.Name)
	d, latency, err := g.decideCall(r.Context(), c, r.Method, resource, input)
	var reasons []string
	if err != nil {
		reasons, d.Allowed = []string{"decision failed: " + err.Error()}, false
	}
	extra := map[string]string{"route": route.Name, "path": rest}
	if d.Allowed {
		grant, err := g.spendGrant(r.Context(), c, d.Reasons, resource, d.ID)
		if err != nil {
			reasons, d.Allowed = []string{"grant not usable: " + err.Error()}, false
		} else if grant != "" {
			extra["grant"] = grant
		}
	}
	if !d.Allowed {
		if rec := g.recordDecision(r.Context(), c, s.Name, r.Method, resource, input, d, latency, reasons, extra); rec != nil {
			g.logger.Error("could not record a denial", "err", rec)
		}
		writeError(w, http.StatusForbidden, "forbidden", "denied by policy (decision "+d.ID+")")
		return
	}
	if err := g.recordDecision(r.Context(), c, s.Name, r.Method, resource, input, d, latency, nil, extra); err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "refused: the audit log is unavailable")
		return
	}
	if err := g.budgets.admit(s, c.id.String(), c.taskID(), c.taskLimits()); err != nil {
		g.recordRefusal(r.Context(), c, "gateway.budget", resource.String(), err.Error(), map[string]string{"server": s.Name})
		writeError(w, http.StatusTooManyRequests, "budget", err.Error())
		return
	}
	if err := g.taint(r.Context(), c, resource); err != nil {
		g.logger.Warn("could not record a task's taint; refusing", "task", c.taskID(), "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "refused: the task's taint could not be recorded")
		return
	}
	target := rt.target + rest
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	ctx := r.Context()
	req, err := g.outbound(ctx, s, r.Method, target, body, r.Header)
	if err != nil {
		g.logger.Error("upstream request not built", "server", s.Name, "err", err)
		writeError(w, http.StatusBadGateway, "upstream", "the gateway could not prepare the upstream request")
		return
	}
	resp, err := rt.up.RoundTrip(req)
	if err != nil {
		g.logger.Warn("upstream unreachable", "server", s.Name, "err", err)
		writeError(w, http.StatusBadGateway, "upstream", "upstream server unavailable")
		return
	}
	defer resp.Body.Close()
	g.copyResponseHeaders(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	g.relay(w, resp.Body, s, c.id.String(), c.taskID())
}

// routeInput builds context.input: {params, query, body}.
func (g *Gateway) routeInput(r *http.Request, params map[string]string, body []byte) ([]byte, error) {
	in := map[string]any{"params": params}
	q := map[string]any{}
	for k, vs := range r.URL.Query() {
		if len(vs) == 1 {
			q[k] = vs[0]
		} else {
			q[k] = vs
		}
	}
	in["query"] = q
	if len(body) > 0 {
		if int64(len(body)) > g.cfg.Limits.MaxInput {
			return nil, fmt.Errorf("a body over %d bytes cannot be checked by policy", g.cfg.Limits.MaxInput)
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
			if err := checkDepth(body); err != nil {
				return nil, err
			}
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				return nil, fmt.Errorf("body is not valid JSON: %w", err)
			}
			in["body"] = v
		} else if mt == "application/x-www-form-urlencoded" {
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, fmt.Errorf("body is not a valid form: %w", err)
			}
			in["body"] = form
		}
	}
	return json.Marshal(in)
}
