package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// A witness keeps, outside the log's database, the newest checkpoint it
// has verified, and checks that every later checkpoint extends it. An
// intruder with database access can shorten the log and have it signed
// again (Verify then passes: the shorter log is self-consistent), but he
// cannot make a witness forget the longer one it holds. Every gateway runs
// one, so a truncation is caught by a machine the database cannot reach.

// ActionAuditWitness records a witness's alert: the log showed a
// checkpoint that does not extend the one the witness holds.
const ActionAuditWitness = "audit.witness"

// DefaultWitnessInterval is how often a witness looks at the log.
const DefaultWitnessInterval = 30 * time.Second

// Alert kinds, the values of WitnessAlert.Kind (and of a metric label).
const (
	// AlertTruncated: the log signs fewer entries than the witness holds,
	// or serves no checkpoint at all.
	AlertTruncated = "truncated"
	// AlertForked: the log signs as many entries with another root.
	AlertForked = "forked"
	// AlertInconsistent: the log signs more entries, but its consistency
	// proof from the held checkpoint does not verify.
	AlertInconsistent = "inconsistent"
	// AlertBadSignature: the checkpoint does not verify with the pinned
	// key (forged, or the key changed).
	AlertBadSignature = "bad_signature"
)

// CheckpointSource is where a witness reads the log it watches.
type CheckpointSource interface {
	// Latest returns the log's latest signed checkpoint, or an error
	// wrapping ErrNoCheckpoint when the log has none.
	Latest(ctx context.Context) ([]byte, error)
	// Consistency returns a proof that the tree of size new extends the
	// tree of size old (tlog.ProveTree).
	Consistency(ctx context.Context, old, new int64) ([]tlog.Hash, error)
}

// WitnessObserver hears of what a witness sees (the metrics registry).
type WitnessObserver interface {
	// Witnessed reports the size of the checkpoint the witness now holds.
	Witnessed(size int64)
	// WitnessAlerted reports an alert of the given kind.
	WitnessAlerted(kind string)
}

// WitnessConfig configures a Witness.
type WitnessConfig struct {
	Source CheckpointSource // required
	// Key pins the log's verifier key (note format, name+hash+data).
	// Without it the key comes from File or, on first use, from FirstKey
	// (trust on first use), and is then kept in File.
	Key string
	// FirstKey fetches the log's key when neither Key nor File gives one.
	FirstKey func(ctx context.Context) (string, error)
	// File, if set, keeps the pinned key and the held checkpoint across
	// restarts (mode 0600, replaced atomically). Without it a restart
	// forgets what was witnessed.
	File     string
	Recorder Recorder // required: records alerts
	Actor    Actor    // required: who records them (the gateway)
	// Observer, if set, hears of the witnessed size and of alerts.
	Observer WitnessObserver
	Clock    clock.Clock  // required
	Logger   *slog.Logger // required
	// Interval spaces observations (default DefaultWitnessInterval).
	Interval time.Duration
}

// Witness holds the newest checkpoint of a log it has verified.
type Witness struct {
	cfg WitnessConfig

	mu        sync.Mutex
	key       string
	verifier  note.Verifier
	held      []byte // the signed note of cp; nil until the first
	cp        Checkpoint
	lastAlert string // kind and digest of the last checkpoint alerted on
}

// WitnessAlert is the error Observe returns when the log does not extend
// the held checkpoint; the held one is kept.
type WitnessAlert struct {
	Kind   string
	Held   Checkpoint
	Seen   Checkpoint // zero when the log served none, or one that does not verify
	Reason string
}

func (a *WitnessAlert) Error() string {
	return "audit: witness alert (" + a.Kind + "): " + a.Reason
}

// Unwrap makes an alert an ErrTampered.
func (a *WitnessAlert) Unwrap() error { return ErrTampered }

// witnessFile is the witness's file.
type witnessFile struct {
	Key        string `json:"key"`
	Checkpoint string `json:"checkpoint,omitempty"` // signed note
}

// NewWitness checks cfg and loads the witness's file. It refuses a file
// that pins another key than cfg.Key, or holds a checkpoint that does not
// verify: either means the log, or the file, is not what it was.
func NewWitness(cfg WitnessConfig) (*Witness, error) {
	if cfg.Source == nil || cfg.Recorder == nil || cfg.Actor.Kind == "" || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("audit: witness needs a checkpoint source, a recorder, an actor, a clock and a logger")
	}
	if cfg.Key == "" && cfg.FirstKey == nil && cfg.File == "" {
		return nil, errors.New("audit: witness needs the log's key, a file pinning it, or a way to fetch it on first use")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultWitnessInterval
	}
	w := &Witness{cfg: cfg, key: strings.TrimSpace(cfg.Key)}
	var f witnessFile
	if cfg.File != "" {
		b, err := os.ReadFile(cfg.File)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("audit: witness file: %w", err)
		default:
			if err := json.Unmarshal(b, &f); err != nil || f.Key == "" {
				return nil, fmt.Errorf("audit: witness file %s is not a witness's: %v", cfg.File, err)
			}
		}
	}
	switch {
	case f.Key != "" && w.key != "" && f.Key != w.key:
		return nil, fmt.Errorf("audit: witness file %s pins the log key %s, not the configured %s: refusing a key change (if the log's key was replaced on purpose, move the file away)", cfg.File, f.Key, w.key)
	case w.key == "":
		w.key = f.Key
	}
	if w.key == "" && cfg.FirstKey == nil {
		return nil, errors.New("audit: witness has no key for the log and no way to fetch it")
	}
	if w.key != "" {
		v, err := note.NewVerifier(w.key)
		if err != nil {
			return nil, fmt.Errorf("audit: witness: log key: %w", err)
		}
		w.verifier = v
	}
	if f.Checkpoint != "" {
		cp, err := OpenCheckpoint([]byte(f.Checkpoint), w.verifier)
		if err != nil {
			return nil, fmt.Errorf("audit: witness file %s: held checkpoint: %w", cfg.File, err)
		}
		w.held, w.cp = []byte(f.Checkpoint), cp
		if cfg.Observer != nil {
			cfg.Observer.Witnessed(cp.Size)
		}
	}
	return w, nil
}

// Held returns the checkpoint the witness holds; ok is false before the
// first.
func (w *Witness) Held() (cp Checkpoint, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cp, w.held != nil
}

// Run observes the log every Interval until ctx ends. A failed observation
// is logged and retried; an alert does not stop it (nor the gateway: an
// intruder must not be able to stop enforcement by breaking the log).
func (w *Witness) Run(ctx context.Context) error {
	for {
		if err := w.Observe(ctx); err != nil && ctx.Err() == nil {
			var a *WitnessAlert
			if !errors.As(err, &a) { // alerts are logged where raised
				w.cfg.Logger.Warn("audit witness could not check the log", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.cfg.Clock.After(w.cfg.Interval):
		}
	}
}

// Observe fetches the log's latest checkpoint and checks that it extends
// the held one, which it then replaces. It returns a *WitnessAlert when
// the log does not (the held checkpoint is kept), and another error when
// it could not ask.
func (w *Witness) Observe(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verifier == nil {
		if err := w.pinFirstKey(ctx); err != nil {
			return err
		}
	}
	msg, err := w.cfg.Source.Latest(ctx)
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		if w.held == nil {
			return nil // a new log: nothing signed yet
		}
		return w.alert(ctx, AlertTruncated, nil, Checkpoint{},
			fmt.Sprintf("the log serves no signed checkpoint, but one of %d entries was witnessed: its checkpoints were deleted", w.cp.Size))
	case err != nil:
		return fmt.Errorf("audit: witness: latest checkpoint: %w", err)
	}
	cp, err := OpenCheckpoint(msg, w.verifier)
	if err != nil {
		return w.alert(ctx, AlertBadSignature, msg, Checkpoint{},
			fmt.Sprintf("the log's latest checkpoint does not verify with its pinned key (forged, or the key was replaced): %v", err))
	}
	if w.held == nil {
		return w.accept(msg, cp)
	}
	switch {
	case cp.Size < w.cp.Size:
		return w.alert(ctx, AlertTruncated, msg, cp,
			fmt.Sprintf("the log signs %d entries, fewer than the %d witnessed: entries were deleted from the end", cp.Size, w.cp.Size))
	case cp.Size == w.cp.Size && cp.Root != w.cp.Root:
		return w.alert(ctx, AlertForked, msg, cp,
			fmt.Sprintf("the log signs %d entries with root %s, but root %s was witnessed at that size: its history was rewritten", cp.Size, cp.Root, w.cp.Root))
	case cp.Size == w.cp.Size:
		return nil
	}
	// Every tree extends the empty one; tlog proves nothing from size 0.
	if w.cp.Size > 0 {
		proof, err := w.cfg.Source.Consistency(ctx, w.cp.Size, cp.Size)
		if err != nil {
			return fmt.Errorf("audit: witness: consistency proof %d→%d: %w", w.cp.Size, cp.Size, err)
		}
		if err := tlog.CheckTree(proof, cp.Size, cp.Root, w.cp.Size, w.cp.Root); err != nil {
			return w.alert(ctx, AlertInconsistent, msg, cp,
				fmt.Sprintf("the log signs %d entries, but does not extend the %d witnessed (%v): its history was rewritten", cp.Size, w.cp.Size, err))
		}
	}
	return w.accept(msg, cp)
}

// pinFirstKey trusts the key the source names on first use, and keeps it.
func (w *Witness) pinFirstKey(ctx context.Context) error {
	key, err := w.cfg.FirstKey(ctx)
	if err != nil {
		return fmt.Errorf("audit: witness: fetch the log's key: %w", err)
	}
	key = strings.TrimSpace(key)
	v, err := note.NewVerifier(key)
	if err != nil {
		return fmt.Errorf("audit: witness: the log's key: %w", err)
	}
	w.key, w.verifier = key, v
	w.cfg.Logger.Info("audit witness pinned the log's key on first use", "key", key, "file", w.cfg.File)
	return w.save()
}

func (w *Witness) accept(msg []byte, cp Checkpoint) error {
	first := w.held == nil
	w.held, w.cp, w.lastAlert = msg, cp, ""
	if w.cfg.Observer != nil {
		w.cfg.Observer.Witnessed(cp.Size)
	}
	if first {
		w.cfg.Logger.Info("audit witness holds its first checkpoint", "log", cp.Origin, "size", cp.Size, "root", cp.Root.String())
	} else {
		w.cfg.Logger.Debug("audit witness verified a newer checkpoint", "size", cp.Size, "root", cp.Root.String())
	}
	return w.save()
}

// alertTimeout bounds recording an alert: the log may be what is broken.
const alertTimeout = 10 * time.Second

// alert reports a checkpoint that does not extend the held one: an Error
// log line every time, and a record and a count once per offending
// checkpoint, so a log that stays broken does not flood its own audit
// trail at every interval.
func (w *Witness) alert(ctx context.Context, kind string, msg []byte, seen Checkpoint, reason string) error {
	a := &WitnessAlert{Kind: kind, Held: w.cp, Seen: seen, Reason: reason}
	fingerprint := kind + " " + Digest(msg)
	repeat := fingerprint == w.lastAlert
	w.lastAlert = fingerprint
	w.cfg.Logger.Error("audit log witness alert: the log does not extend the checkpoint this witness holds; the held one is kept",
		"kind", kind, "reason", reason, "held_size", w.cp.Size, "held_root", w.cp.Root.String(),
		"held_checkpoint", string(w.held), "seen_checkpoint", clip(msg), "repeat", repeat)
	if repeat {
		return a
	}
	if w.cfg.Observer != nil {
		w.cfg.Observer.WitnessAlerted(kind)
	}
	ev := Event{Actor: w.cfg.Actor, Action: ActionAuditWitness, Target: w.verifier.Name(), Decision: Deny, Reasons: []string{reason},
		Detail: map[string]string{"kind": kind, "held_size": strconv.FormatInt(w.cp.Size, 10), "held_root": w.cp.Root.String()}}
	if w.held != nil {
		ev.Detail["held_checkpoint"] = string(w.held)
	}
	if msg != nil {
		ev.Digests = map[string]string{"checkpoint": Digest(msg)}
	}
	if seen != (Checkpoint{}) {
		ev.Detail["seen_size"] = strconv.FormatInt(seen.Size, 10)
		ev.Detail["seen_root"] = seen.Root.String()
		ev.Detail["seen_checkpoint"] = string(msg) // verified, so small
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), alertTimeout)
	defer cancel()
	if _, err := w.cfg.Recorder.Record(rctx, ev); err != nil {
		w.cfg.Logger.Error("could not record the audit witness alert; the log itself may be what is broken", "kind", kind, "err", err)
	}
	return a
}

// clip bounds what a log line quotes of a checkpoint that may not be one.
func clip(msg []byte) string {
	if len(msg) > maxCheckpointText {
		return string(msg[:maxCheckpointText]) + "..."
	}
	return string(msg)
}

// save writes the file atomically: a crash leaves the old file or the new
// one, never a torn one that would make the witness forget.
func (w *Witness) save() error {
	if w.cfg.File == "" {
		return nil
	}
	b, err := json.MarshalIndent(witnessFile{Key: w.key, Checkpoint: string(w.held)}, "", "  ")
	if err != nil {
		return fmt.Errorf("audit: witness file: %w", err)
	}
	if err := writeAtomic(w.cfg.File, append(b, '\n')); err != nil {
		w.cfg.Logger.Error("audit witness could not save what it holds; a restart would forget it", "file", w.cfg.File, "err", err)
		return fmt.Errorf("audit: witness file: %w", err)
	}
	return nil
}

func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename, a no-op
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// CheckpointReader is what LocalCheckpoints reads.
type CheckpointReader interface {
	HashStore
	LatestCheckpoint(ctx context.Context) (StoredCheckpoint, bool, error)
}

// LocalCheckpoints is a CheckpointSource over the log's own store: what a
// gateway running inside the control plane witnesses. Its witness file
// lives on the control plane's disk, out of reach of an intruder who has
// only the database.
type LocalCheckpoints struct{ Store CheckpointReader }

var _ CheckpointSource = LocalCheckpoints{}

// Latest implements CheckpointSource.
func (l LocalCheckpoints) Latest(ctx context.Context) ([]byte, error) {
	sc, ok, err := l.Store.LatestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNoCheckpoint
	}
	return sc.Note, nil
}

// Consistency implements CheckpointSource.
func (l LocalCheckpoints) Consistency(ctx context.Context, old, new int64) ([]tlog.Hash, error) {
	return tlog.ProveTree(new, old, HashReader(ctx, l.Store))
}
