package connect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// The local API: the sidecar's own endpoints, on its loopback listener,
// for an agent that cannot speak mTLS to the control plane. It opens,
// shows and completes the task the sidecar's tokens carry, and requests
// and polls elevations in it, acting with the sidecar's SVID. Its answers
// are tasks and elevations, never a token or a key.
//
// It lives under LocalPrefix. The gateway serves only /mcp/NAME,
// /http/NAME/... and /.well-known/..., and an upstream's paths are always
// below /http/NAME/, so no proxied path starts with it: every request
// under it is the sidecar's, and every other request is proxied.

// LocalPrefix is the local API's path prefix.
const LocalPrefix = "/.bulkhead/"

// LocalHeader must be on every request to the local API (any non-empty
// value; send "Bulkhead-Sidecar: 1"). A web page cannot add it to a
// cross-origin request without a CORS preflight, which the sidecar never
// grants.
const LocalHeader = "Bulkhead-Sidecar"

const (
	// maxLocalBody bounds a local API request's body.
	maxLocalBody = 16 << 10
	// localJSONDepth bounds its nesting: the bodies are flat objects.
	localJSONDepth = 4
	// controlPlaneTimeout bounds each call the local API makes.
	controlPlaneTimeout = 30 * time.Second
)

// Local API bodies.
type (
	openTaskRequest struct {
		Manifest    string `json:"manifest"`
		Description string `json:"description,omitempty"`
	}
	endTaskRequest struct {
		Reason string `json:"reason,omitempty"`
	}
	elevationRequest struct {
		Trigger       string `json:"trigger"`
		Justification string `json:"justification"`
	}
	approveRequest struct {
		Reason string `json:"reason,omitempty"`
	}
	// taskResponse is the task the sidecar's tokens carry; Task is nil
	// when they carry none (the agent's baseline).
	taskResponse struct {
		Task *api.Task `json:"task"`
	}
)

// isLocal reports whether r is for the local API.
func isLocal(r *http.Request) bool {
	return r.URL.Path == "/.bulkhead" || strings.HasPrefix(r.URL.Path, LocalPrefix)
}

// localRoute is an endpoint of the local API (docs/connect-openapi.yaml
// documents each).
type localRoute struct {
	method, path string
	h            http.HandlerFunc
}

func (s *Sidecar) localRoutes() []localRoute {
	return []localRoute{
		{http.MethodGet, "/.bulkhead/v1/task", s.showTask},
		{http.MethodPost, "/.bulkhead/v1/task", s.openTask},
		{http.MethodPost, "/.bulkhead/v1/task/complete", s.completeTask},
		{http.MethodPost, "/.bulkhead/v1/elevations", s.requestElevation},
		{http.MethodGet, "/.bulkhead/v1/elevations/{id}", s.showElevation},
		{http.MethodPost, "/.bulkhead/v1/elevations/{id}/approve", s.approveElevation},
	}
}

// newLocal is the local API's handler; checkLocal has passed.
func (s *Sidecar) newLocal() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.localRoutes() {
		mux.HandleFunc(rt.method+" "+rt.path, rt.h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status, msg := s.checkLocalAPI(r); status != 0 {
			s.cfg.Logger.Warn("local API request refused", "method", r.Method, "host", r.Host, "path", r.URL.Path,
				"origin", r.Header.Get("Origin"), "remote", r.RemoteAddr, "reason", msg)
			writeError(w, status, "refused", msg)
			return
		}
		if path.Clean(r.URL.Path) != r.URL.Path {
			writeError(w, http.StatusNotFound, "not_found", "bulkhead connect: no such local API path (paths are canonical: no '..', '//' or trailing '/')")
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			notRouted(w, r, mux)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// notRouted answers a local API path that does not exist, or exists with
// other methods, in the API's JSON shape.
func notRouted(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		rr := r.Clone(r.Context())
		rr.Method = m
		if _, p := mux.Handler(rr); p != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		writeError(w, http.StatusNotFound, "not_found", "bulkhead connect: no such local API path; see docs/connect-openapi.yaml")
		return
	}
	for _, m := range allow {
		w.Header().Add("Allow", m)
	}
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("bulkhead connect: %s does not answer %s", r.URL.Path, r.Method))
}

// checkLocalAPI refuses, beyond checkLocal, what the agent's own process
// never sends to the local API: a request from off the loopback interface,
// anything a browser sent (an Origin, even a loopback one, since a page
// from a local dev server is a web page too; Sec-Fetch-* metadata), a Host
// that is not the address the sidecar listens on (DNS rebinding), and a
// request without LocalHeader (CSRF: a page cannot set it without a
// preflight).
func (s *Sidecar) checkLocalAPI(r *http.Request) (int, string) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
		return http.StatusForbidden, fmt.Sprintf("bulkhead connect: the local API answers only the agent's own process, over loopback, not %s", r.RemoteAddr)
	}
	if o := r.Header.Get("Origin"); o != "" {
		return http.StatusForbidden, fmt.Sprintf("bulkhead connect: the local API refuses requests from web pages (Origin %q)", o)
	}
	for _, h := range []string{"Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest"} {
		if r.Header.Get(h) != "" {
			return http.StatusForbidden, fmt.Sprintf("bulkhead connect: the local API refuses requests from browsers (%s)", h)
		}
	}
	if !s.isListenHost(r.Host) {
		return http.StatusForbidden, fmt.Sprintf("bulkhead connect: Host %q is not the sidecar's address; use %s", r.Host, s.listenAddr())
	}
	if r.Header.Get(LocalHeader) == "" {
		return http.StatusForbidden, fmt.Sprintf("bulkhead connect: the local API needs the header %q on every request", LocalHeader+": 1")
	}
	return 0, ""
}

// listenAddr is the address the sidecar serves on: the bound one once
// Listen has run, else the configured one.
func (s *Sidecar) listenAddr() string {
	if a := s.Addr(); a != "" {
		return a
	}
	return s.cfg.Listen
}

// isListenHost reports whether a Host header names the sidecar's address:
// a loopback name (127.0.0.1, [::1], localhost) with the listener's port.
func (s *Sidecar) isListenHost(hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "80"
	}
	_, want, err := net.SplitHostPort(s.listenAddr())
	return err == nil && host != "" && httpx.LoopbackHost(host) && port == want
}

// decodeLocal reads a local API body strictly (httpx.UnmarshalJSON), at
// most maxLocalBody bytes of application/json. An empty body is the zero
// value when optional.
func decodeLocal(w http.ResponseWriter, r *http.Request, optional bool, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLocalBody))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			return fmt.Errorf("bulkhead connect: %w: the body is over %d bytes", fault.TooLarge, maxLocalBody)
		}
		return fmt.Errorf("bulkhead connect: %w: cannot read the body", fault.Invalid)
	}
	if len(b) == 0 && optional {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return fmt.Errorf("bulkhead connect: %w: the body must be application/json", fault.Unsupported)
	}
	if err := httpx.UnmarshalJSON(b, localJSONDepth, v); err != nil {
		return fmt.Errorf("bulkhead connect: %w", err)
	}
	return nil
}

// fail answers a local refusal (a fault kind) with its status.
func (s *Sidecar) fail(w http.ResponseWriter, err error) {
	status, code, text := httpx.Problem(err)
	writeError(w, status, code, text)
}

// controlPlaneError answers a failed call to the control plane. Its
// refusals (4xx) pass through with their code and message, which say what
// to fix; a refusal of the sidecar's own credentials, or a failure, is a
// 502, as for the gateway.
func (s *Sidecar) controlPlaneError(w http.ResponseWriter, r *http.Request, what string, err error) {
	var ce *client.Error
	switch {
	case errors.As(err, &ce) && ce.Status == http.StatusUnauthorized:
		s.cfg.Logger.Error("the control plane refused the agent's credentials", "server", s.cfg.ServerURL, "call", what, "err", ce.Message)
		writeError(w, http.StatusBadGateway, "control_plane_refused_credentials", "bulkhead connect: the control plane refused the agent's credentials: "+ce.Message)
	case errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500:
		s.cfg.Logger.Info("the control plane refused a local API call", "call", what, "status", ce.Status, "code", ce.Code, "err", ce.Message)
		writeError(w, ce.Status, ce.Code, ce.Message)
	case r.Context().Err() != nil:
		w.WriteHeader(http.StatusBadGateway)
	default:
		s.cfg.Logger.Warn("control plane call failed", "server", s.cfg.ServerURL, "call", what, "err", err)
		writeError(w, http.StatusBadGateway, "control_plane_unavailable",
			fmt.Sprintf("bulkhead connect: the control plane at %s could not answer (%s): %v", s.cfg.ServerURL, what, err))
	}
}

func writeLocal(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, status, v)
}

// cp is the control plane client with the sidecar's current SVID.
func (s *Sidecar) cp() *client.Client { return s.rot.Client() }

func cpContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), controlPlaneTimeout)
}

// Task returns the task the sidecar's tokens carry, or "".
func (s *Sidecar) Task() string { return s.gw.Task() }

// setTask switches the task of the tokens of requests sent from now on.
func (s *Sidecar) setTask(id, why string) {
	prev := s.gw.Task()
	s.gw.SetTask(id)
	if id == "" {
		s.cfg.Logger.Info("tokens are back at the agent's baseline", "previous_task", prev, "why", why)
		return
	}
	s.cfg.Logger.Info("tokens carry a task", "task", id, "previous_task", prev, "why", why)
}

func (s *Sidecar) showTask(w http.ResponseWriter, r *http.Request) {
	id := s.Task()
	if id == "" {
		writeLocal(w, http.StatusOK, taskResponse{})
		return
	}
	ctx, cancel := cpContext(r)
	defer cancel()
	t, err := s.cp().Task(ctx, id)
	if err != nil {
		s.controlPlaneError(w, r, "show task", err)
		return
	}
	writeLocal(w, http.StatusOK, taskResponse{Task: &t})
}

// openTask opens a task and makes the tokens carry it. A task still open
// is never dropped silently: complete it first.
func (s *Sidecar) openTask(w http.ResponseWriter, r *http.Request) {
	var req openTaskRequest
	if err := decodeLocal(w, r, false, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Manifest == "" {
		s.fail(w, fmt.Errorf("bulkhead connect: %w: manifest is required (the task's manifest, by name)", fault.Invalid))
		return
	}
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	ctx, cancel := cpContext(r)
	defer cancel()
	if cur := s.Task(); cur != "" {
		t, err := s.cp().Task(ctx, cur)
		if err != nil {
			s.controlPlaneError(w, r, "show task", err)
			return
		}
		if t.Open {
			writeError(w, http.StatusConflict, "task_open", fmt.Sprintf("bulkhead connect: the sidecar's tokens carry task %s (manifest %s), which is still open; complete it first (POST %sv1/task/complete)", cur, t.Manifest, LocalPrefix))
			return
		}
	}
	t, err := s.cp().StartTask(ctx, req.Manifest, req.Description)
	if err != nil {
		s.controlPlaneError(w, r, "open task", err)
		return
	}
	s.setTask(t.ID, "opened through the local API")
	writeLocal(w, http.StatusCreated, taskResponse{Task: &t})
}

// completeTask completes the task and returns the tokens to baseline. A
// task that had ended already (cancelled by an operator, expired) is
// dropped as well, and shown as it ended.
func (s *Sidecar) completeTask(w http.ResponseWriter, r *http.Request) {
	var req endTaskRequest
	if err := decodeLocal(w, r, true, &req); err != nil {
		s.fail(w, err)
		return
	}
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	cur := s.Task()
	if cur == "" {
		writeError(w, http.StatusConflict, "no_task", "bulkhead connect: the sidecar's tokens carry no task; they are at the agent's baseline")
		return
	}
	ctx, cancel := cpContext(r)
	defer cancel()
	t, err := s.cp().CompleteTask(ctx, cur, req.Reason)
	if err != nil {
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusConflict {
			s.controlPlaneError(w, r, "complete task", err)
			return
		}
		// Ended already: see how, and drop it if it is not open.
		if t, err = s.cp().Task(ctx, cur); err != nil {
			s.controlPlaneError(w, r, "show task", err)
			return
		}
		if t.Open {
			s.controlPlaneError(w, r, "complete task", ce)
			return
		}
		s.cfg.Logger.Warn("the sidecar's task had ended already", "task", cur, "status", t.Status, "ended_at", t.EndedAt, "ended_by", t.EndedBy)
	}
	s.setTask("", "task "+t.Status)
	writeLocal(w, http.StatusOK, taskResponse{Task: &t})
}

// requestElevation asks for a trigger of the task the tokens carry.
func (s *Sidecar) requestElevation(w http.ResponseWriter, r *http.Request) {
	var req elevationRequest
	if err := decodeLocal(w, r, false, &req); err != nil {
		s.fail(w, err)
		return
	}
	cur := s.Task()
	if cur == "" {
		writeError(w, http.StatusConflict, "no_task", fmt.Sprintf("bulkhead connect: elevation is asked for in a task; open one first (POST %sv1/task)", LocalPrefix))
		return
	}
	ctx, cancel := cpContext(r)
	defer cancel()
	el, err := s.cp().RequestElevation(ctx, cur, req.Trigger, req.Justification)
	if err != nil {
		s.controlPlaneError(w, r, "request elevation", err)
		return
	}
	s.cfg.Logger.Info("elevation requested", "task", cur, "elevation", el.ID, "trigger", el.Trigger, "status", el.Status)
	writeLocal(w, http.StatusCreated, el)
}

func (s *Sidecar) showElevation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := elevation.ValidateElevationID(id); err != nil {
		s.fail(w, fmt.Errorf("bulkhead connect: %w", err))
		return
	}
	ctx, cancel := cpContext(r)
	defer cancel()
	el, err := s.cp().Elevation(ctx, id)
	if err != nil {
		s.controlPlaneError(w, r, "show elevation", err)
		return
	}
	writeLocal(w, http.StatusOK, el)
}

// approveElevation exists so that an agent's attempt to approve (its own
// request, or any) is refused by the control plane, which records it
// against the agent: an agent can never approve, and the sidecar holds no
// operator credential.
func (s *Sidecar) approveElevation(w http.ResponseWriter, r *http.Request) {
	var req approveRequest
	if err := decodeLocal(w, r, true, &req); err != nil {
		s.fail(w, err)
		return
	}
	id := r.PathValue("id")
	if err := elevation.ValidateElevationID(id); err != nil {
		s.fail(w, fmt.Errorf("bulkhead connect: %w", err))
		return
	}
	s.cfg.Logger.Warn("the agent tried to approve an elevation; the control plane refuses and records it", "elevation", id, "task", s.Task())
	ctx, cancel := cpContext(r)
	defer cancel()
	el, err := s.cp().ApproveElevation(ctx, id, s.Task(), req.Reason)
	if err != nil {
		s.controlPlaneError(w, r, "approve elevation", err)
		return
	}
	// Unreachable while the control plane refuses every agent.
	s.cfg.Logger.Error("the control plane accepted an agent's approval", "elevation", id)
	writeLocal(w, http.StatusOK, el)
}
