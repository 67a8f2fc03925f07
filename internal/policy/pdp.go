package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Defaults of PDPConfig.
const (
	DefaultPollInterval = time.Second
	DefaultMaxStale     = 30 * time.Second
)

// PDPStore is the storage a PDP reads and writes.
type PDPStore interface {
	SnapshotStore
	ShadowStore
}

// PDPConfig holds a PDP's dependencies.
type PDPConfig struct {
	// Store is where policies, roles and tools are loaded from, and where
	// shadow differences go. Required.
	Store PDPStore
	// TrustDomain is the agents' trust domain. Required.
	TrustDomain spiffeid.TrustDomain
	Clock       clock.Clock  // required
	Logger      *slog.Logger // required
	// PollInterval is how often Run looks for changes made elsewhere (by
	// another replica); zero means DefaultPollInterval.
	PollInterval time.Duration
	// MaxStale is how long the PDP keeps deciding after it last reached
	// the store; past it every decision is a deny with an error. Zero
	// means DefaultMaxStale.
	MaxStale time.Duration
	// Managed lists the policy sets compiled from task manifests (see
	// ManagedSet). Nil means none: a request that names a manifest is
	// then denied.
	Managed ManagedSource
	// Observer, if set, hears of every decision and its duration.
	Observer DecisionObserver
}

// DecisionObserver hears of every decision the PDP makes.
type DecisionObserver interface {
	Decided(allowed bool, took time.Duration)
}

// PDP is the policy decision point: it evaluates requests against the live
// policy set, indexed, and the shadow set beside it when there is one. It
// loads what the store holds at New and whenever the store's generation
// changes (Reload, Run).
type PDP struct {
	store     PDPStore
	clock     clock.Clock
	logger    *slog.Logger
	td        spiffeid.TrustDomain
	poll      time.Duration
	maxStale  time.Duration
	shadowRec *shadowRecorder
	managed   ManagedSource
	observer  DecisionObserver

	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex

	idPrefix string
	idSeq    atomic.Uint64
}

var _ Decider = (*PDP)(nil)

// snapshot is everything a decision reads, swapped whole on reload.
type snapshot struct {
	generation int64
	live       *compiledSet // nil: no version applied yet
	shadow     *compiledSet // nil: no shadow evaluation
	world      *world
	// managed are the manifests' sets by manifest name.
	managed map[string]*managedEntry
	// reached is when the store was last read successfully (UnixNano).
	reached atomic.Int64
}

// compiledSet is a stored version, compiled, with its action entities.
type compiledSet struct {
	*Set
	actions map[cedar.EntityUID]*node
}

func newCompiledSet(s *Set) *compiledSet { return &compiledSet{Set: s, actions: actionNodes(s.schema)} }

// NewPDP returns a PDP loaded from the store. It fails if the store cannot
// be read: a PDP never starts without its policies.
func NewPDP(ctx context.Context, cfg PDPConfig) (*PDP, error) {
	if cfg.Store == nil || cfg.Clock == nil || cfg.Logger == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("policy: store, trust domain, clock and logger are required")
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("policy: decision id prefix: %w", err)
	}
	p := &PDP{store: cfg.Store, clock: cfg.Clock, logger: cfg.Logger, td: cfg.TrustDomain,
		poll: cfg.PollInterval, maxStale: cfg.MaxStale, managed: cfg.Managed, observer: cfg.Observer, idPrefix: hex.EncodeToString(b[:]) + "-"}
	if p.poll <= 0 {
		p.poll = DefaultPollInterval
	}
	if p.maxStale <= 0 {
		p.maxStale = DefaultMaxStale
	}
	p.shadowRec = newShadowRecorder(cfg.Store, cfg.Logger)
	if err := p.Reload(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// Run polls the store for changes and writes shadow differences until ctx
// ends.
func (p *PDP) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := p.shadowRec.flush(fctx); err != nil {
				p.logger.Warn("shadow differences not written at shutdown", "err", err)
			}
			return nil
		case <-p.clock.After(p.poll):
		}
		if err := p.Reload(ctx); err != nil && ctx.Err() == nil {
			p.logger.Warn("policy reload failed; deciding with the last loaded state", "err", err)
		}
		if err := p.shadowRec.flush(ctx); err != nil && ctx.Err() == nil {
			p.logger.Warn("could not write shadow differences", "err", err)
		}
	}
}

// Reload reads the store's state and, if it changed, loads it. A failed
// reload keeps the current state (until it is MaxStale old).
func (p *PDP) Reload(ctx context.Context) error {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	st, err := p.store.PolicyState(ctx)
	if err != nil {
		return fmt.Errorf("policy: read state: %w", err)
	}
	now := p.clock.Now()
	cur := p.snap.Load()
	if cur != nil && cur.generation == st.Generation {
		cur.reached.Store(now.UnixNano())
		return nil
	}
	next := &snapshot{generation: st.Generation}
	if next.live, err = p.loadSet(ctx, st.Live, cur); err != nil {
		return err
	}
	if next.shadow, err = p.loadSet(ctx, st.Shadow, cur); err != nil {
		return err
	}
	if next.managed, err = p.loadManaged(ctx, next.live, cur); err != nil {
		return err
	}
	agents, err := p.store.PolicyAgents(ctx)
	if err != nil {
		return fmt.Errorf("policy: load agents: %w", err)
	}
	cat, err := p.store.ToolCatalog(ctx)
	if err != nil {
		return fmt.Errorf("policy: load tool catalog: %w", err)
	}
	next.world = newWorld(p.td, agents, cat)
	if next.live != nil {
		next.world.link(next.live.index)
	}
	next.reached.Store(now.UnixNano())
	p.snap.Store(next)
	p.logger.Debug("policy state loaded", "generation", st.Generation, "live", st.Live, "shadow", st.Shadow)
	return nil
}

// loadSet returns version n compiled, reusing the current snapshot's copy:
// versions never change, and compiling a large set takes seconds.
func (p *PDP) loadSet(ctx context.Context, n int64, cur *snapshot) (*compiledSet, error) {
	if n == 0 {
		return nil, nil
	}
	if cur != nil {
		for _, c := range []*compiledSet{cur.live, cur.shadow} {
			if c != nil && c.version == n {
				return c, nil
			}
		}
	}
	v, err := p.store.PolicyVersion(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("policy: load version %d: %w", n, err)
	}
	s, err := Compile(v.Files)
	if err != nil {
		// A stored version was valid when applied; if it no longer
		// compiles (a schema change), nothing is decided with it.
		return nil, fmt.Errorf("policy: version %d no longer compiles: %w", n, err)
	}
	s.version = n
	return newCompiledSet(s), nil
}

// State returns the versions the PDP is deciding with.
func (p *PDP) State() (live, shadow int64) {
	s := p.snap.Load()
	if s == nil {
		return 0, 0
	}
	return s.live.number(), s.shadow.number()
}

func (c *compiledSet) number() int64 {
	if c == nil {
		return 0
	}
	return c.version
}

// newID returns a decision id, unique across replicas (random prefix) and
// cheap (a counter).
func (p *PDP) newID() string {
	var buf [40]byte
	b := append(buf[:0], p.idPrefix...)
	return string(strconv.AppendUint(b, p.idSeq.Add(1), 10))
}

// Decide decides a request. It denies by default, lets forbid override
// permit, and denies on any evaluation error; an error return (always with
// a deny) means the PDP could not decide at all.
func (p *PDP) Decide(ctx context.Context, req Request) (Decision, error) {
	pr := preparedPool.Get().(*prepared)
	defer pr.release()
	if err := req.prepareInto(pr); err != nil {
		return Decision{ID: p.newID()}, err
	}
	d, _, err := p.decide(pr)
	return d, err
}

// decide evaluates pr, a real request, against the live set, and against
// the shadow set if there is one, recording a difference. It returns the
// Cedar request it decided.
func (p *PDP) decide(pr *prepared) (Decision, cedar.Request, error) {
	if p.observer == nil {
		return p.decideUnobserved(pr)
	}
	// Real time, not the injected clock: this is a latency figure.
	start := time.Now()
	d, req, err := p.decideUnobserved(pr)
	p.observer.Decided(d.Allowed, time.Since(start))
	return d, req, err
}

func (p *PDP) decideUnobserved(pr *prepared) (Decision, cedar.Request, error) {
	d := Decision{ID: p.newID()}
	snap, now, err := p.current()
	if err != nil {
		return d, cedar.Request{}, err
	}
	req := pr.build(now)
	if err := snap.world.checkPathArgs(req.Action, req.Resource, pr.ctx[ctxInput]); err != nil {
		// Before any policy: a non-canonical path would mean one thing to
		// a policy's pattern and another to the tool.
		d.Reasons = []string{PathArgsReason + ": " + err.Error()}
		if snap.live != nil {
			d.Version = snap.live.version
		}
		return d, req, nil
	}
	v := &pr.view
	live := snap.live
	res := snap.evaluateWith(live, v, pr, req)
	if live == nil {
		// Nothing applied yet: deny by default.
		return d, req, nil
	}
	manifest, scoped := pr.requestManifest()
	d.Version = live.version
	d.Allowed, d.Reasons, d.Errors = conclude(res)
	d.ReadOnly = d.Allowed && snap.world.readOnly[req.Resource]
	if d.Allowed {
		d.Sensitivity = snap.world.sensitivity[req.Resource]
	}
	if snap.shadow != nil {
		v.useActions(snap.shadow.actions)
		sres := snap.shadow.evaluate(v, req)
		if scoped {
			sres = snap.withManaged(v, req, manifest, sres)
		}
		sAllowed, sReasons, _ := conclude(sres)
		p.shadowRec.observe(snap.shadow.version, d, sAllowed, sReasons, req, now)
	}
	return d, req, nil
}

// evaluateWith evaluates req with set (nil: nothing applied, a deny by
// default) and, for a request in a task, the manifest's managed set, over
// snap's world seen through v: the one evaluation every decision takes
// (Decide, Explain and the analyses of a Frozen PDP).
func (snap *snapshot) evaluateWith(set *compiledSet, v *view, pr *prepared, req cedar.Request) result {
	v.reset(snap.world)
	if set == nil || !v.linked(set.index, req.Principal) {
		v.addAgent(req.Principal)
	}
	for _, e := range pr.extra {
		v.extra = append(v.extra, &node{entity: e})
	}
	if set == nil {
		return result{decision: cedar.Deny}
	}
	v.useActions(set.actions)
	res := set.evaluate(v, req)
	if manifest, scoped := pr.requestManifest(); scoped {
		res = snap.withManaged(v, req, manifest, res)
	}
	return res
}

// current returns the snapshot if it is fresh enough to decide with.
func (p *PDP) current() (*snapshot, time.Time, error) {
	now := p.clock.Now()
	snap := p.snap.Load()
	if snap == nil {
		return nil, now, fmt.Errorf("%w: the policy decision point has not loaded its policies", fault.Unavailable)
	}
	if age := now.Sub(time.Unix(0, snap.reached.Load())); age > p.maxStale {
		return nil, now, fmt.Errorf("%w: the policy store has been unreachable for %s; denying until it is back", fault.Unavailable, age.Round(time.Second))
	}
	return snap, now, nil
}

// conclude applies Bulkhead's rule to cedar-go's result: allow only if
// cedar-go allows and no policy failed to evaluate.
func conclude(r result) (allowed bool, reasons []string, errs []EvalError) {
	for _, e := range r.diag.Errors {
		errs = append(errs, EvalError{PolicyID: string(e.PolicyID), Message: e.Message})
	}
	slices.SortFunc(errs, func(a, b EvalError) int {
		if a.PolicyID != b.PolicyID {
			return compareStrings(a.PolicyID, b.PolicyID)
		}
		return compareStrings(a.Message, b.Message)
	})
	allowed = r.decision == cedar.Allow && len(errs) == 0
	// The reasons explain the decision given: an allow overridden by an
	// error has none (its errors say why).
	if allowed == (r.decision == cedar.Allow) {
		reasons = make([]string, len(r.diag.Reasons))
		for i, reason := range r.diag.Reasons {
			reasons[i] = string(reason.PolicyID)
		}
		slices.Sort(reasons)
	}
	return allowed, reasons, errs
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
