package secret

import (
	"log/slog"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// maxSetBody bounds a set request: MaxValueSize in base64, in JSON.
const maxSetBody = 128 << 10

// Routes registers the secrets API on mux. Every route needs an SVID over
// mTLS (guard): operators set, list and delete; only Bulkhead components
// reach the value endpoint, and Reveal then admits gateways alone.
func (s *Service) Routes(mux *http.ServeMux, guard peer.Guard, logger *slog.Logger) {
	h := handlers{s: s, logger: logger}
	operator := func(f http.HandlerFunc) http.Handler { return guard.Require(peer.Kinds(audit.ActorOperator), f) }
	mux.Handle("GET /v1/secrets", operator(h.list))
	mux.Handle("PUT /v1/secrets/{name}", operator(h.set))
	mux.Handle("DELETE /v1/secrets/{name}", operator(h.remove))
	mux.Handle("GET /v1/secrets/{name}/value", guard.Require(peer.Kinds(audit.ActorWorkload), http.HandlerFunc(h.reveal)))
}

type handlers struct {
	s      *Service
	logger *slog.Logger
}

func (h handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, h.logger, err)
}

func caller(r *http.Request) peer.Principal {
	p, _ := peer.FromContext(r.Context())
	return p
}

func (h handlers) set(w http.ResponseWriter, r *http.Request) {
	var req api.SetSecretRequest
	if err := httpx.DecodeJSON(w, r, maxSetBody, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	// Best effort: do not leave the plaintext in this buffer longer than
	// needed.
	defer clear(req.Value)
	m, err := h.s.Set(r.Context(), caller(r).Actor(), r.PathValue("name"), req.Value)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, JSON(m))
}

func (h handlers) list(w http.ResponseWriter, r *http.Request) {
	ms, err := h.s.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]api.Secret, 0, len(ms))
	for _, m := range ms {
		out = append(out, JSON(m))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (h handlers) remove(w http.ResponseWriter, r *http.Request) {
	if err := h.s.Delete(r.Context(), caller(r).Actor(), r.PathValue("name")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h handlers) reveal(w http.ResponseWriter, r *http.Request) {
	v, err := h.s.RevealVersion(r.Context(), caller(r), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer clear(v.Value)
	// WriteJSON marks the response no-store.
	httpx.WriteJSON(w, http.StatusOK, api.SecretValue{Name: v.Name, Version: v.Version, Value: v.Value})
}

// JSON converts a secret's metadata to its wire form.
func JSON(m Meta) api.Secret {
	return api.Secret{Name: m.Name, Version: m.Version, CreatedAt: m.CreatedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC(), UpdatedBy: m.UpdatedBy}
}
