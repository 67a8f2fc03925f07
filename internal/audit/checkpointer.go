package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// TreeState is the stored tree's size and retention horizon.
type TreeState struct {
	// Size is the number of events hashed into the tree.
	Size int64
	// PrunedBefore: the bodies of events below it were archived and
	// deleted; their hashes stay, so the tree still verifies.
	PrunedBefore int64
}

// HashStore reads the stored tree.
type HashStore interface {
	TreeState(ctx context.Context) (TreeState, error)
	// ReadHashes returns the stored hashes at the given indexes, the zero
	// Hash for any that is missing.
	ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
}

// HashReader adapts s to tlog, turning a missing hash into an error.
func HashReader(ctx context.Context, s HashStore) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		hs, err := s.ReadHashes(ctx, indexes)
		if err != nil {
			return nil, err
		}
		for i, h := range hs {
			if h == (tlog.Hash{}) {
				return nil, fmt.Errorf("audit: stored hash %d is missing", indexes[i])
			}
		}
		return hs, nil
	})
}

// CheckpointStore keeps signed checkpoints.
type CheckpointStore interface {
	HashStore
	// LatestCheckpoint returns the checkpoint of the largest size; ok is
	// false when there is none yet.
	LatestCheckpoint(ctx context.Context) (cp StoredCheckpoint, ok bool, err error)
	// AddCheckpoint stores cp; storing a size again is a no-op, so
	// replicas that sign the same tree do not conflict.
	AddCheckpoint(ctx context.Context, cp StoredCheckpoint) error
}

// Checkpoint defaults.
const (
	DefaultCheckpointEvery    = 10000
	DefaultCheckpointInterval = 5 * time.Second
)

// CheckpointerConfig configures a Checkpointer.
// CheckpointFile is where a control plane keeps its newest signed
// checkpoint, in its audit directory, outside the database.
const CheckpointFile = "checkpoint.note"

type CheckpointerConfig struct {
	Store  CheckpointStore // required
	Key    Key             // required: signs, and checks the last checkpoint
	Clock  clock.Clock     // required
	Logger *slog.Logger    // required
	// Log, if set, is watched so that a checkpoint follows every Every
	// events committed here; without it only Interval applies.
	Log *Log
	// Every is the number of new events that triggers a checkpoint
	// (default DefaultCheckpointEvery).
	Every int64
	// Interval is the longest time a grown tree waits for a checkpoint
	// (default DefaultCheckpointInterval).
	Interval time.Duration
	// File, if set, also keeps the newest signed checkpoint outside the
	// database: an emptied, replaced or truncated store then fails
	// 'audit verify', which checks the log extends it.
	File string
	// Publish, if set, is given every newly signed checkpoint note (a
	// witness URL outside the operator's reach); its errors are its own.
	Publish func(note []byte)
}

// Checkpointer signs the stored tree every Every events or Interval,
// whichever comes first, and never signs a tree that does not extend the
// last signed one.
type Checkpointer struct {
	cfg CheckpointerConfig
}

// NewCheckpointer checks cfg and fills defaults.
func NewCheckpointer(cfg CheckpointerConfig) (*Checkpointer, error) {
	if cfg.Store == nil || cfg.Key.Signer == nil || cfg.Key.Verifier == nil || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("audit: checkpointer needs a store, a key, a clock and a logger")
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultCheckpointEvery
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultCheckpointInterval
	}
	return &Checkpointer{cfg: cfg}, nil
}

// ErrForked is returned when the stored tree does not extend the last
// signed checkpoint: history was rewritten under the log.
var ErrForked = errors.New("audit: stored tree does not extend the last signed checkpoint")

// Checkpoint signs and stores a checkpoint of the current tree if it grew
// since the last one, and returns the latest checkpoint.
func (c *Checkpointer) Checkpoint(ctx context.Context) (Checkpoint, error) {
	s := c.cfg.Store
	// The checkpoint first, then the tree: the tree only grows, so it
	// covers whatever any replica signed before it was read.
	var last Checkpoint
	stored, ok, err := s.LatestCheckpoint(ctx)
	if err != nil {
		return Checkpoint{}, err
	}
	st, err := s.TreeState(ctx)
	if err != nil {
		return Checkpoint{}, err
	}
	if ok {
		// Our own checkpoint, re-verified: a forged row must not become
		// the base that the next signature vouches for.
		if last, err = OpenCheckpoint(stored.Note, c.cfg.Key.Verifier); err != nil {
			return Checkpoint{}, fmt.Errorf("audit: latest stored checkpoint: %w", err)
		}
		if last.Size > st.Size {
			return Checkpoint{}, fmt.Errorf("%w: the tree has %d entries but size %d was signed", ErrForked, st.Size, last.Size)
		}
		if last.Size == st.Size {
			c.keep(last, stored.Note)
			return last, nil
		}
	}
	if st.Size == 0 {
		return Checkpoint{}, nil
	}
	r := HashReader(ctx, s)
	root, err := tlog.TreeHash(st.Size, r)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: tree hash at %d: %w", st.Size, err)
	}
	if ok && last.Size > 0 {
		proof, err := tlog.ProveTree(st.Size, last.Size, r)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("audit: consistency proof %d→%d: %w", last.Size, st.Size, err)
		}
		if err := tlog.CheckTree(proof, st.Size, root, last.Size, last.Root); err != nil {
			return Checkpoint{}, fmt.Errorf("%w (size %d → %d): %w", ErrForked, last.Size, st.Size, err)
		}
	}
	cp := Checkpoint{Origin: c.cfg.Key.Signer.Name(), Size: st.Size, Root: root}
	msg, err := cp.Sign(c.cfg.Key.Signer)
	if err != nil {
		return Checkpoint{}, err
	}
	if err := s.AddCheckpoint(ctx, StoredCheckpoint{Size: cp.Size, IssuedAt: c.cfg.Clock.Now().UTC(), Note: msg}); err != nil {
		return Checkpoint{}, err
	}
	c.cfg.Logger.Debug("audit checkpoint", "size", cp.Size, "root", cp.Root.String())
	c.keep(cp, msg)
	if c.cfg.Publish != nil {
		c.cfg.Publish(msg)
	}
	return cp, nil
}

// keep writes cp to File unless the file already holds a checkpoint at
// least as large. A failure is logged: the checkpoint is in the store.
func (c *Checkpointer) keep(cp Checkpoint, msg []byte) {
	if c.cfg.File == "" {
		return
	}
	if b, err := os.ReadFile(c.cfg.File); err == nil {
		if old, err := OpenCheckpoint(b, c.cfg.Key.Verifier); err == nil && old.Size >= cp.Size {
			return
		}
	}
	if err := writeAtomic(c.cfg.File, msg); err != nil {
		c.cfg.Logger.Warn("could not keep the latest checkpoint outside the store", "file", c.cfg.File, "err", err)
	}
}

// Run issues checkpoints until ctx ends, then issues a last one so that a
// clean shutdown leaves the whole log signed. A failed checkpoint is logged
// and retried; it does not stop the control plane, whose actions are still
// recorded (and refused when they cannot be).
func (c *Checkpointer) Run(ctx context.Context) error {
	var (
		events <-chan Event
		cancel = func() {}
	)
	subscribe := func() {
		cancel()
		if c.cfg.Log != nil {
			events, cancel = c.cfg.Log.Subscribe(nil, 4096)
		}
	}
	subscribe()
	defer func() { cancel() }()
	try := func(ctx context.Context) {
		if _, err := c.Checkpoint(ctx); err != nil {
			c.cfg.Logger.Error("audit checkpoint refused", "err", err)
		}
	}
	try(ctx)
	var count int64
	tick := c.cfg.Clock.After(c.cfg.Interval)
	for {
		select {
		case <-ctx.Done():
			fctx, done := context.WithTimeout(context.Background(), 5*time.Second)
			try(fctx)
			done()
			return nil
		case _, ok := <-events:
			if !ok { // fell behind: resubscribe and catch up at once
				subscribe()
				count = c.cfg.Every
			} else {
				count++
			}
			if count >= c.cfg.Every {
				try(ctx)
				count = 0
			}
		case <-tick:
			try(ctx)
			count = 0
			tick = c.cfg.Clock.After(c.cfg.Interval)
		}
	}
}
