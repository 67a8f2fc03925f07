package audit

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// APIStore is what the audit API reads and changes.
type APIStore interface {
	VerifyStore
	LatestCheckpoint(ctx context.Context) (StoredCheckpoint, bool, error)
	Cursors(ctx context.Context) (map[string]int64, error)
	PruneEvents(ctx context.Context, before int64) (int64, error)
}

// APIConfig holds the audit API's dependencies; all but AgentID are
// required.
type APIConfig struct {
	Store  APIStore
	Log    *Log // records prunes before they happen
	Key    Key
	Logger *slog.Logger
	// Actor returns the authenticated caller of a request (set by the
	// endpoint guard). A request without one is refused.
	Actor func(*http.Request) (Actor, bool)
	// AgentID maps an agent name to its SPIFFE ID, for searches by agent.
	AgentID func(name string) (string, error)
}

// API serves the log's checkpoints, entries, proofs, searches and archives.
type API struct {
	cfg APIConfig
}

// NewAPI checks cfg.
func NewAPI(cfg APIConfig) (*API, error) {
	if cfg.Store == nil || cfg.Log == nil || cfg.Key.Verifier == nil || cfg.Logger == nil || cfg.Actor == nil {
		return nil, errors.New("audit: API needs a store, the log, its key, a logger and an actor source")
	}
	return &API{cfg: cfg}, nil
}

// Wire types of the audit API.
type (
	// Entry is one entry of the log.
	Entry struct {
		Seq int64 `json:"seq"`
		// Body is the canonical event body exactly as it was hashed
		// (tlog.RecordHash(body) is LeafHash).
		Body     []byte    `json:"body"`
		LeafHash tlog.Hash `json:"leaf_hash"`
		Event    Event     `json:"event"`
	}
	// InclusionProof proves that entry Seq is in the tree of size Size.
	InclusionProof struct {
		Seq      int64       `json:"seq"`
		Size     int64       `json:"size"`
		LeafHash tlog.Hash   `json:"leaf_hash"`
		Proof    []tlog.Hash `json:"proof"`
		// Checkpoint is the signed checkpoint of Size, when there is one.
		Checkpoint string `json:"checkpoint,omitempty"`
	}
	// ConsistencyProof proves that the tree of size New extends the tree
	// of size Old.
	ConsistencyProof struct {
		Old        int64       `json:"old"`
		New        int64       `json:"new"`
		Proof      []tlog.Hash `json:"proof"`
		Checkpoint string      `json:"checkpoint,omitempty"`
	}
	// PruneRequest asks to delete archived bodies below Before.
	PruneRequest struct {
		Before int64 `json:"before"`
		// ArchiveSHA256 is the hex SHA-256 of the archive that holds the
		// entries; it is recorded, so the log says where they went.
		ArchiveSHA256 string `json:"archive_sha256"`
		Reason        string `json:"reason,omitempty"`
	}
	// PruneResult reports a prune.
	PruneResult struct {
		Before  int64 `json:"before"`
		Deleted int64 `json:"deleted"`
		// RecordedSeq is the audit.prune event that records it.
		RecordedSeq int64 `json:"recorded_seq"`
	}
)

// Routes registers the API. GET /v1/audit/key (the public verifier key,
// like a bundle endpoint) is open; the latest checkpoint and consistency
// proofs, which reveal only hashes, are wrapped by witness (operators and
// the gateways that witness the log; nil means operator); every other
// route is wrapped by operator. Both must authenticate and authorize the
// caller.
func (a *API) Routes(mux *http.ServeMux, operator, witness func(http.Handler) http.Handler) {
	if witness == nil {
		witness = operator
	}
	mux.HandleFunc("GET /v1/audit/key", a.key)
	for _, r := range []struct {
		pattern string
		h       http.HandlerFunc
		guard   func(http.Handler) http.Handler
	}{
		{"GET /v1/audit/checkpoint", a.checkpoint, witness},
		{"GET /v1/audit/entries/{seq}", a.entry, operator},
		{"GET /v1/audit/proof/inclusion", a.inclusion, operator},
		{"GET /v1/audit/proof/consistency", a.consistency, witness},
		{"GET /v1/audit/events", a.search, operator},
		{"GET /v1/audit/archive", a.archive, operator},
		{"POST /v1/audit/prune", a.prune, operator},
	} {
		mux.Handle(r.pattern, r.guard(r.h))
	}
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.cfg.Logger, err)
}

func (a *API) key(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(a.cfg.Key.VerifierKey + "\n"))
}

// latest returns the latest signed checkpoint, verified.
func (a *API) latest(ctx context.Context) ([]byte, Checkpoint, error) {
	sc, ok, err := a.cfg.Store.LatestCheckpoint(ctx)
	if err != nil {
		return nil, Checkpoint{}, err
	}
	if !ok {
		return nil, Checkpoint{}, fmt.Errorf("%w: the log has no signed checkpoint yet", fault.NotFound)
	}
	cp, err := OpenCheckpoint(sc.Note, a.cfg.Key.Verifier)
	if err != nil {
		return nil, Checkpoint{}, err // internal: a stored checkpoint that does not verify
	}
	return sc.Note, cp, nil
}

func (a *API) checkpoint(w http.ResponseWriter, r *http.Request) {
	msg, _, err := a.latest(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(msg)
}

func (a *API) entry(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 0 {
		a.fail(w, r, fmt.Errorf("%w: entry must be a sequence number", fault.Invalid))
		return
	}
	st, err := a.cfg.Store.TreeState(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	switch {
	case seq >= st.Size:
		a.fail(w, r, fmt.Errorf("%w: the log has %d entries", fault.NotFound, st.Size))
		return
	case seq < st.PrunedBefore:
		a.fail(w, r, fmt.Errorf("%w: entry %d was archived and pruned; its archive holds it with a proof", fault.NotFound, seq))
		return
	}
	rows, err := a.cfg.Store.Events(r.Context(), Query{AfterSeq: seq - 1, Limit: 1})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if len(rows) == 0 || rows[0].Seq != seq {
		a.fail(w, r, fmt.Errorf("%w: entry %d is missing from the store", fault.NotFound, seq))
		return
	}
	ev, err := EventFromRow(rows[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, Entry{Seq: seq, Body: rows[0].Body, LeafHash: tlog.RecordHash(rows[0].Body), Event: ev})
}

// treeSize resolves a requested tree size: zero means the latest signed
// checkpoint's, which is then returned with the proof.
func (a *API) treeSize(ctx context.Context, size int64) (int64, []byte, error) {
	if size == 0 {
		msg, cp, err := a.latest(ctx)
		return cp.Size, msg, err
	}
	st, err := a.cfg.Store.TreeState(ctx)
	if err != nil {
		return 0, nil, err
	}
	if size > st.Size {
		return 0, nil, fmt.Errorf("%w: the log has %d entries, not %d", fault.NotFound, st.Size, size)
	}
	return size, nil, nil
}

func (a *API) inclusion(w http.ResponseWriter, r *http.Request) {
	p, err := ParseProofParams(r.URL.Query(), []string{"seq", "size"}, []string{"seq"})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	size, msg, err := a.treeSize(r.Context(), p.Size)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if p.Seq >= size {
		a.fail(w, r, fmt.Errorf("%w: entry %d is not in the tree of size %d (yet)", fault.NotFound, p.Seq, size))
		return
	}
	hr := HashReader(r.Context(), a.cfg.Store)
	leaf, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, p.Seq)})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	proof, err := tlog.ProveRecord(size, p.Seq, hr)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, InclusionProof{Seq: p.Seq, Size: size, LeafHash: leaf[0], Proof: proof, Checkpoint: string(msg)})
}

func (a *API) consistency(w http.ResponseWriter, r *http.Request) {
	p, err := ParseProofParams(r.URL.Query(), []string{"old", "new"}, []string{"old"})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	size, msg, err := a.treeSize(r.Context(), p.New)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if p.Old > size {
		a.fail(w, r, fmt.Errorf("%w: old size %d is beyond new size %d", fault.Invalid, p.Old, size))
		return
	}
	proof, err := tlog.ProveTree(size, p.Old, HashReader(r.Context(), a.cfg.Store))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ConsistencyProof{Old: p.Old, New: size, Proof: proof, Checkpoint: string(msg)})
}

func (a *API) search(w http.ResponseWriter, r *http.Request) {
	q, err := ParseSearch(r.URL.Query(), a.cfg.AgentID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rows, err := a.cfg.Store.Events(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]Event, 0, len(rows))
	for _, row := range rows {
		ev, err := EventFromRow(row)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		out = append(out, ev)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (a *API) archive(w http.ResponseWriter, r *http.Request) {
	p, err := ParseProofParams(r.URL.Query(), []string{"from", "before"}, []string{"before"})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	msg, cp, err := a.latest(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	st, err := a.cfg.Store.TreeState(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	from := max(p.From, st.PrunedBefore)
	if p.Before > cp.Size || from > p.Before {
		a.fail(w, r, fmt.Errorf("%w: can archive retained, signed entries [%d, %d) only", fault.Invalid, st.PrunedBefore, cp.Size))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	if err := WriteArchive(r.Context(), w, a.cfg.Store, msg, cp, from, p.Before); err != nil {
		// Headers are gone; the client sees a short archive, which
		// VerifyArchive refuses.
		a.cfg.Logger.Error("audit archive failed", "err", err)
	}
}

func (a *API) prune(w http.ResponseWriter, r *http.Request) {
	actor, ok := a.cfg.Actor(r)
	if !ok {
		a.fail(w, r, fmt.Errorf("%w: no authenticated caller", fault.Unauthenticated))
		return
	}
	var req PruneRequest
	if err := httpx.DecodeJSON(w, r, 0, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.Prune(r.Context(), actor, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// Prune deletes the bodies of entries below req.Before once they are
// covered by a signed checkpoint and delivered to every sink, recording
// the prune first: if the record cannot be written, nothing is deleted.
func (a *API) Prune(ctx context.Context, by Actor, req PruneRequest) (PruneResult, error) {
	if b, err := hex.DecodeString(req.ArchiveSHA256); err != nil || len(b) != 32 {
		return PruneResult{}, fmt.Errorf("%w: archive_sha256 must be the hex SHA-256 of the archive holding the entries", fault.Invalid)
	}
	if len(req.Reason) > 1024 {
		return PruneResult{}, fmt.Errorf("%w: reason is over 1024 bytes", fault.Invalid)
	}
	st, err := a.cfg.Store.TreeState(ctx)
	if err != nil {
		return PruneResult{}, err
	}
	if req.Before <= st.PrunedBefore {
		return PruneResult{}, fmt.Errorf("%w: entries below %d are already pruned", fault.Conflict, st.PrunedBefore)
	}
	_, cp, err := a.latest(ctx)
	if err != nil {
		return PruneResult{}, err
	}
	if req.Before > cp.Size {
		return PruneResult{}, fmt.Errorf("%w: only entries covered by a signed checkpoint (below %d) can be pruned", fault.Conflict, cp.Size)
	}
	cursors, err := a.cfg.Store.Cursors(ctx)
	if err != nil {
		return PruneResult{}, err
	}
	for name, seq := range cursors {
		if seq < req.Before-1 {
			return PruneResult{}, fmt.Errorf("%w: sink %s has delivered entries up to %d only", fault.Conflict, name, seq)
		}
	}
	ev := Event{Actor: by, Action: ActionAuditPrune, Target: cp.Origin, Decision: Allow,
		Digests: map[string]string{"archive": "sha256:" + req.ArchiveSHA256},
		Detail:  map[string]string{"before": strconv.FormatInt(req.Before, 10), "previous": strconv.FormatInt(st.PrunedBefore, 10)}}
	if req.Reason != "" {
		ev.Reasons = []string{req.Reason}
	}
	rec, err := a.cfg.Log.Record(ctx, ev)
	if err != nil {
		return PruneResult{}, fmt.Errorf("%w: prune refused because the audit log is unavailable", fault.Unavailable)
	}
	n, err := a.cfg.Store.PruneEvents(ctx, req.Before)
	if err != nil {
		failed := ev
		failed.Decision = Failed
		failed.Reasons = append(slices.Clone(ev.Reasons), err.Error())
		failed.Detail = maps.Clone(ev.Detail)
		failed.Detail["allowed_seq"] = strconv.FormatInt(rec.Seq, 10)
		if _, aerr := a.cfg.Log.Record(ctx, failed); aerr != nil {
			a.cfg.Logger.Error("could not record a failed prune", "err", aerr)
		}
		return PruneResult{}, err
	}
	return PruneResult{Before: req.Before, Deleted: n, RecordedSeq: rec.Seq}, nil
}
