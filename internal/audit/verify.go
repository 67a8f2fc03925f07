package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyStore is what Verify reads: events, stored hashes and checkpoints.
type VerifyStore interface {
	HashStore
	Reader
	// Checkpoints returns up to limit stored checkpoints with Size > after,
	// smallest first.
	Checkpoints(ctx context.Context, after int64, limit int) ([]StoredCheckpoint, error)
	// MaxHashIndex returns the largest index of a stored hash, or -1 when
	// there is none: hashes beyond the tree's end are what an intruder who
	// shortened the tree left behind.
	MaxHashIndex(ctx context.Context) (int64, error)
}

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Verifier checks checkpoint signatures. Required: it must come from
	// somewhere an intruder in the database cannot write (the data
	// directory, or a key pinned out of band).
	Verifier note.Verifier
	// Saved are signed checkpoints kept from earlier; the log must extend
	// each of them (append-only).
	Saved [][]byte
	// Progress, if set, is called after each page with entries done and
	// the total.
	Progress func(done, total int64)
}

// Report describes a log that verified.
type Report struct {
	Size        int64        `json:"size"`          // entries in the tree
	Pruned      int64        `json:"pruned"`        // entries below the retention horizon, checked by hash
	Checked     int64        `json:"checked"`       // entries whose bodies were rehashed
	Checkpoints int          `json:"checkpoints"`   // stored checkpoints whose roots were recomputed
	Latest      Checkpoint   `json:"latest"`        // the latest signed checkpoint
	Saved       []Checkpoint `json:"saved"`         // saved checkpoints the log extends
	Unsigned    int64        `json:"unsigned_tail"` // entries after Latest, checked against stored hashes only
}

// ErrTampered is wrapped by every VerifyError.
var ErrTampered = errors.New("audit: the log does not verify")

// ErrNoCheckpoint means the log has entries but nothing signed them yet.
var ErrNoCheckpoint = errors.New("audit: no signed checkpoint to verify against")

// VerifyError reports the first bad entry found.
type VerifyError struct {
	// Index is the first bad entry, or -1 when the failure is not about an
	// entry (a checkpoint that does not verify).
	Index int64
	// Upto, when above Index, means the bad entry is somewhere in
	// [Index, Upto): the stored hashes were rewritten along with it, so
	// only the signed checkpoints can narrow it down.
	Upto   int64
	Reason string
}

func (e *VerifyError) Error() string {
	switch {
	case e.Index < 0:
		return "audit: the log does not verify: " + e.Reason
	case e.Upto > e.Index+1:
		return fmt.Sprintf("audit: the log does not verify: first bad entry in [%d, %d): %s", e.Index, e.Upto, e.Reason)
	}
	return fmt.Sprintf("audit: the log does not verify: first bad entry %d: %s", e.Index, e.Reason)
}

func (e *VerifyError) Unwrap() error { return ErrTampered }

func bad(index int64, format string, args ...any) error {
	return &VerifyError{Index: index, Reason: fmt.Sprintf(format, args...)}
}

// verifyPage is how many entries Verify reads at a time.
const verifyPage = 4096

// Verify recomputes the Merkle tree from the stored events and checks it
// against every stored signed checkpoint and every saved one. It returns a
// *VerifyError naming the first bad entry when an entry was changed,
// deleted, inserted or moved, and another error when it could not read the
// store.
//
// Each body is rehashed and compared with the record hash stored when it
// was appended, which names the exact entry when only events were edited;
// the recomputed roots are compared with the signed ones, which catches an
// intruder who also rewrote the stored hashes.
func Verify(ctx context.Context, s VerifyStore, opt VerifyOptions) (Report, error) {
	if opt.Verifier == nil {
		return Report{}, errors.New("audit: verify needs the log's verifier key")
	}
	st, err := s.TreeState(ctx)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Size: st.Size, Pruned: st.PrunedBefore}
	v := &verifier{s: s, opt: opt, rep: &rep, size: st.Size}
	for _, msg := range opt.Saved {
		cp, err := OpenCheckpoint(msg, opt.Verifier)
		if err != nil {
			return rep, fmt.Errorf("audit: saved checkpoint: %w", err)
		}
		if cp.Size > st.Size {
			return rep, bad(st.Size, "the log has %d entries but a saved checkpoint signed %d: entries were deleted from the end, or this is not the log that signed it", st.Size, cp.Size)
		}
		v.saved = append(v.saved, cp)
	}
	sort.Slice(v.saved, func(i, j int) bool { return v.saved[i].Size < v.saved[j].Size })
	if err := v.checkPruneHorizon(ctx, st.PrunedBefore); err != nil {
		return rep, err
	}
	if err := v.run(ctx, st); err != nil {
		return rep, err
	}
	if st.Size > 0 && rep.Checkpoints == 0 {
		return rep, fmt.Errorf("%w: the log has %d entries", ErrNoCheckpoint, st.Size)
	}
	rep.Unsigned = st.Size - rep.Latest.Size
	rep.Saved = v.saved
	return rep, v.checkNothingBeyond(ctx)
}

type verifier struct {
	s    VerifyStore
	opt  VerifyOptions
	rep  *Report
	size int64
	tree *Frontier

	stored  []Checkpoint // the current page of stored checkpoints
	next    int64        // index into stored
	after   int64        // size of the last stored checkpoint fetched
	done    bool         // no more stored checkpoints
	saved   []Checkpoint
	savedAt int
	good    int64 // the largest size at which a signed root matched
	// goodSaved is the largest size at which a saved checkpoint matched:
	// when a saved one disagrees, the stored ones (signed by the same,
	// perhaps stolen, key) cannot narrow down where history changed.
	goodSaved int64
}

// checkPruneHorizon makes sure every deleted body is covered by a recorded
// audit.prune: an intruder who deletes old events and raises the horizon
// to hide it is caught here.
func (v *verifier) checkPruneHorizon(ctx context.Context, horizon int64) error {
	if horizon == 0 {
		return nil
	}
	rows, err := v.s.Events(ctx, Query{AfterSeq: horizon - 1, Actions: []string{ActionAuditPrune}})
	if err != nil {
		return err
	}
	var covered int64
	for _, r := range rows {
		ev, err := EventFromRow(r)
		if err != nil || ev.Decision != Allow {
			continue
		}
		if n, err := strconv.ParseInt(ev.Detail["before"], 10, 64); err == nil && n > covered {
			covered = n
		}
	}
	if covered < horizon {
		return &VerifyError{Index: covered, Upto: horizon,
			Reason: fmt.Sprintf("entries below %d are gone but a recorded audit.prune covers only those below %d", horizon, covered)}
	}
	return nil
}

func (v *verifier) run(ctx context.Context, st TreeState) error {
	v.tree, _ = NewFrontier(0, nil)
	if err := v.fetchStored(ctx); err != nil {
		return err
	}
	if err := v.checkAt(ctx, 0); err != nil {
		return err
	}
	n := int64(0)
	// Pruned entries: only their stored record hashes remain.
	for n < st.PrunedBefore {
		cnt := min(verifyPage, st.PrunedBefore-n)
		hs, err := v.s.ReadHashes(ctx, leafIndexes(n, cnt))
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h == (tlog.Hash{}) {
				return bad(n, "the entry was pruned and its stored hash is missing")
			}
			if err := v.add(ctx, h, &n); err != nil {
				return err
			}
		}
		v.progress(n)
	}
	// Retained entries: rehash every body.
	for n < st.Size {
		rows, err := v.s.Events(ctx, Query{AfterSeq: n - 1, Limit: verifyPage})
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return bad(n, "the entry is missing: deleted")
		}
		cnt := min(int64(len(rows)), st.Size-n)
		recorded, err := v.s.ReadHashes(ctx, leafIndexes(n, cnt))
		if err != nil {
			return err
		}
		for i := range cnt {
			r := rows[i]
			if r.Seq != n {
				return bad(n, "the entry is missing: deleted (the next stored entry is %d)", r.Seq)
			}
			if recorded[i] == (tlog.Hash{}) {
				return bad(n, "the entry's record hash is missing from the tree")
			}
			h := tlog.RecordHash(r.Body)
			if h != recorded[i] {
				return bad(n, "the entry does not match the record hash stored when it was appended: it was changed, inserted or moved")
			}
			if err := checkColumns(r); err != nil {
				return bad(n, "%v", err)
			}
			v.rep.Checked++
			if err := v.add(ctx, h, &n); err != nil {
				return err
			}
		}
		v.progress(n)
	}
	return v.checkAt(ctx, -1)
}

func (v *verifier) add(ctx context.Context, h tlog.Hash, n *int64) error {
	if _, err := v.tree.AppendHash(h); err != nil {
		return err
	}
	*n++
	if v.dueAt() == *n {
		return v.checkAt(ctx, *n)
	}
	return nil
}

func (v *verifier) progress(n int64) {
	if v.opt.Progress != nil {
		v.opt.Progress(n, v.size)
	}
}

// dueAt is the size of the next checkpoint to check, or -1.
func (v *verifier) dueAt() int64 {
	due := int64(-1)
	if v.next < int64(len(v.stored)) {
		due = v.stored[v.next].Size
	}
	if v.savedAt < len(v.saved) && (due < 0 || v.saved[v.savedAt].Size < due) {
		due = v.saved[v.savedAt].Size
	}
	return due
}

// checkAt compares the tree's root with every checkpoint of size m; m = -1
// means the end of the tree, where any checkpoint left over is beyond it.
func (v *verifier) checkAt(ctx context.Context, m int64) error {
	if m < 0 {
		return v.checkCheckpointsBeyond(ctx)
	}
	root, err := v.tree.Root()
	if err != nil {
		return err
	}
	for v.next < int64(len(v.stored)) && v.stored[v.next].Size == m {
		if v.stored[v.next].Root != root {
			return &VerifyError{Index: v.good, Upto: m, Reason: fmt.Sprintf(
				"the first %d entries do not hash to the root signed at that size: an entry was changed and its stored hashes rewritten to match", m)}
		}
		v.good = m
		v.rep.Latest = v.stored[v.next]
		v.rep.Checkpoints++
		v.next++
	}
	for v.savedAt < len(v.saved) && v.saved[v.savedAt].Size == m {
		if v.saved[v.savedAt].Root != root {
			return &VerifyError{Index: v.goodSaved, Upto: m, Reason: fmt.Sprintf(
				"the log does not extend the saved checkpoint of size %d: its history was rewritten (and, if the stored checkpoints agree with it, re-signed: treat the log's key as compromised)", m)}
		}
		v.good, v.goodSaved = m, m
		v.savedAt++
	}
	if v.next >= int64(len(v.stored)) && !v.done {
		return v.fetchStored(ctx)
	}
	return nil
}

// checkCheckpointsBeyond checks the stored checkpoints that sign more
// entries than the tree Verify started from. The log may have grown while
// Verify ran: then the tree, re-read now, covers each of them and its
// stored hashes hash to the signed roots. Anything else means entries were
// deleted from the end (a truncation that left a checkpoint behind), or
// deleted and replaced by others.
func (v *verifier) checkCheckpointsBeyond(ctx context.Context) error {
	var beyond []Checkpoint
	for {
		beyond = append(beyond, v.stored[v.next:]...)
		v.next = int64(len(v.stored))
		// Fetched even once done: checkpoints signed while Verify ran
		// are checked too.
		if err := v.fetchStored(ctx); err != nil {
			return err
		}
		if len(v.stored) == 0 {
			break
		}
	}
	if len(beyond) == 0 {
		return nil
	}
	st, err := v.s.TreeState(ctx)
	if err != nil {
		return err
	}
	if last := beyond[len(beyond)-1]; last.Size > st.Size {
		return bad(st.Size, "a checkpoint signed %d entries but the tree has %d: entries were deleted from the end", last.Size, st.Size)
	}
	r := HashReader(ctx, v.s)
	for _, cp := range beyond {
		root, err := tlog.TreeHash(cp.Size, r)
		if err != nil || root != cp.Root {
			return &VerifyError{Index: v.size, Upto: cp.Size, Reason: fmt.Sprintf(
				"the tree grew to %d entries while verifying, but not into the tree signed at size %d: entries were deleted from the end and others appended in their place", st.Size, cp.Size)}
		}
	}
	return nil
}

// fetchStored loads the next page of stored checkpoints, verifying each
// signature.
func (v *verifier) fetchStored(ctx context.Context) error {
	page, err := v.s.Checkpoints(ctx, v.after, 1024)
	if err != nil {
		return err
	}
	v.stored, v.next = v.stored[:0], 0
	if len(page) == 0 {
		v.done = true
		return nil
	}
	for _, sc := range page {
		cp, err := OpenCheckpoint(sc.Note, v.opt.Verifier)
		if err != nil {
			return bad(-1, "the stored checkpoint of size %d does not verify with the log's key: %v", sc.Size, err)
		}
		if cp.Size != sc.Size {
			return bad(-1, "the stored checkpoint filed under size %d signs size %d", sc.Size, cp.Size)
		}
		v.stored = append(v.stored, cp)
		v.after = cp.Size
	}
	return nil
}

// checkNothingBeyond looks for events past the end of the tree, which only
// an insertion behind the log's back can create, and for stored hashes past
// it, which only a shortened tree leaves. Appends that commit while Verify
// runs grow the tree with them (events, hashes and size commit together),
// so each is read before the size that must cover it.
func (v *verifier) checkNothingBeyond(ctx context.Context) error {
	maxIdx, err := v.s.MaxHashIndex(ctx)
	if err != nil {
		return err
	}
	st, err := v.s.TreeState(ctx)
	if err != nil {
		return err
	}
	rows, err := v.s.Events(ctx, Query{AfterSeq: st.Size - 1, Limit: 1})
	if err != nil {
		return err
	}
	if len(rows) > 0 {
		again, err := v.s.TreeState(ctx)
		if err != nil {
			return err
		}
		if rows[0].Seq >= again.Size {
			return bad(rows[0].Seq, "the entry is not in the tree (which has %d entries): it was inserted behind the log's back", again.Size)
		}
	}
	if maxIdx >= tlog.StoredHashCount(st.Size) {
		return bad(st.Size, "the tree has %d entries but hashes of at least %d are stored: entries were deleted from the end and the tree shortened to hide it",
			st.Size, entriesHashed(maxIdx))
	}
	return nil
}

// entriesHashed is the smallest tree size whose stored hashes include
// index idx.
func entriesHashed(idx int64) int64 {
	// StoredHashCount(n) >= n, so the answer is at most idx+1.
	return int64(sort.Search(int(idx+1), func(n int) bool { return tlog.StoredHashCount(int64(n)) > idx }))
}

// indexed is the part of a body that the store copies into columns.
type indexed struct {
	Time     time.Time `json:"time"`
	Actor    Actor     `json:"actor"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Decision string    `json:"decision"`
	Task     string    `json:"task"`
}

// checkColumns compares the columns searches filter on with the hashed
// body: editing them would hide an event from a search without touching
// the evidence.
func checkColumns(r Row) error {
	var b indexed
	if err := json.Unmarshal(r.Body, &b); err != nil {
		return fmt.Errorf("the entry's body is not an event: %w", err)
	}
	if b.Time.UnixMicro() != r.Time.UnixMicro() || b.Actor.Kind != ActorKind(r.ActorKind) || b.Actor.ID != r.ActorID ||
		b.Action != r.Action || b.Target != r.Target || b.Decision != r.Decision || b.Task != r.Task {
		return errors.New("the entry's search columns do not match its body: they were edited to hide it from searches")
	}
	return nil
}

// leafIndexes returns the stored-hash indexes of the record hashes of
// entries [from, from+n).
func leafIndexes(from, n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = tlog.StoredHashIndex(0, from+int64(i))
	}
	return out
}
