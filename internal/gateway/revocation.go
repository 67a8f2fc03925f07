package gateway

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// RevocationActions are the audit actions that change who may act. The
// gateway rebuilds its revocation state from them at start and follows them
// live.
var RevocationActions = []string{
	audit.ActionSVIDRevoke, audit.ActionAgentRevoke, audit.ActionAgentDisable, audit.ActionAgentEnable,
	token.ActionTokenRevoke,
}

// Revocations is the gateway's view of revoked certificates, revoked or
// disabled agents and revoked tokens, built from the control plane's event
// stream. Until the backlog has been read, it refuses everyone (fail
// closed). It also tracks open connections by certificate and agent so a
// revocation closes them.
type Revocations struct {
	logger *slog.Logger
	// clock and maxStale bound how long the state is trusted while the
	// feed is broken (see Bound); zero maxStale: until the feed is back.
	clock    clock.Clock
	maxStale time.Duration

	mu    sync.RWMutex
	ready bool
	// brokenAt is when the feed broke, zero while it is connected and
	// caught up.
	brokenAt time.Time
	seq      int64
	serials  map[string]bool
	agents   map[string]string // SPIFFE ID → "revoked" | "disabled"
	jtis     map[string]bool
	conns    map[net.Conn]connOwner
	// onChange hears ChangeActions' records.
	onChange []func(audit.Event)
}

type connOwner struct {
	serial string
	id     string
}

// NewRevocations returns an empty, not yet ready state.
func NewRevocations(logger *slog.Logger) *Revocations {
	return &Revocations{logger: logger, seq: -1, serials: map[string]bool{}, agents: map[string]string{},
		jtis: map[string]bool{}, conns: map[net.Conn]connOwner{}}
}

// ErrNotReady refuses requests before the revocation backlog is read.
var ErrNotReady = errors.New("gateway: revocation state not loaded yet")

// DefaultMaxStale is how long a gateway keeps serving on the revocation
// state it has while no control plane replica answers its feed.
const DefaultMaxStale = 30 * time.Second

// Bound makes r refuse everyone (fail closed) once its feed has been
// broken for longer than maxStale: a revocation made meanwhile could not
// have reached it. Until then decisions are made on the cached state, and
// Stale says so for their records.
func (r *Revocations) Bound(clk clock.Clock, maxStale time.Duration) *Revocations {
	r.clock, r.maxStale = clk, maxStale
	return r
}

// Stale returns how long the feed has been broken, and false while it is
// connected.
func (r *Revocations) Stale() (time.Duration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.brokenAt.IsZero() || r.clock == nil {
		return 0, false
	}
	return r.clock.Now().Sub(r.brokenAt), true
}

// broken notes that the feed broke (the first time since it was last
// caught up).
func (r *Revocations) broken() {
	if r.clock == nil {
		return
	}
	r.mu.Lock()
	if r.brokenAt.IsZero() {
		r.brokenAt = r.clock.Now()
	}
	r.mu.Unlock()
}

// Apply folds one committed event into the state and closes the
// connections it concerns. Events must arrive in sequence order; older ones
// are ignored.
func (r *Revocations) Apply(ev audit.Event) {
	if ev.Decision != audit.Allow {
		return // a refused revocation attempt changes nothing
	}
	r.mu.Lock()
	if ev.Seq <= r.seq {
		r.mu.Unlock()
		return
	}
	r.seq = ev.Seq
	var closeSerial, closeID string
	switch ev.Action {
	case audit.ActionSVIDRevoke:
		if sn := ev.Detail["serial"]; sn != "" {
			r.serials[sn] = true
			closeSerial = sn
		}
	case audit.ActionAgentRevoke:
		r.agents[ev.Target] = "revoked"
		closeID = ev.Target
	case audit.ActionAgentDisable:
		r.agents[ev.Target] = "disabled"
		closeID = ev.Target
	case audit.ActionAgentEnable:
		delete(r.agents, ev.Target)
	case token.ActionTokenRevoke:
		if j := ev.Detail["jti"]; j != "" {
			r.jtis[j] = true
			// A token is not tied to a connection; the agent's next
			// request with it is refused.
		}
	}
	var notify []func(audit.Event)
	if slices.Contains(ChangeActions, ev.Action) {
		notify = r.onChange
	}
	var toClose []net.Conn
	for c, o := range r.conns {
		if (closeSerial != "" && o.serial == closeSerial) || (closeID != "" && isSelfOrDescendant(o.id, closeID)) {
			toClose = append(toClose, c)
			delete(r.conns, c)
		}
	}
	r.mu.Unlock()
	for _, c := range toClose {
		r.logger.Info("closing a revoked caller's connection", "spiffe_id", ev.Target, "action", ev.Action)
		_ = c.Close()
	}
	for _, f := range notify {
		f(ev)
	}
}

// OnChange makes f hear each record of ChangeActions the feed applies (a
// policy, role, catalog or task change). f must not block.
func (r *Revocations) OnChange(f func(audit.Event)) {
	r.mu.Lock()
	r.onChange = append(r.onChange, f)
	r.mu.Unlock()
}

// feedActions are what a feed follows.
func feedActions() []string { return append(slices.Clone(RevocationActions), ChangeActions...) }

func isSelfOrDescendant(id, ancestor string) bool {
	return id == ancestor || strings.HasPrefix(id, ancestor+"/sub/")
}

// SetReady marks the backlog as read: the state is current.
func (r *Revocations) SetReady() {
	r.mu.Lock()
	r.ready = true
	r.brokenAt = time.Time{}
	r.mu.Unlock()
}

// Seq is the last event applied, the resume point of a feed.
func (r *Revocations) Seq() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.seq
}

// Check refuses a caller whose certificate, identity, any ancestor, token,
// or any token of its delegation chain is revoked (or disabled).
func (r *Revocations) Check(serial string, c *token.Claims) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.ready {
		return ErrNotReady
	}
	if !r.brokenAt.IsZero() && r.maxStale > 0 && r.clock.Now().Sub(r.brokenAt) > r.maxStale {
		return fmt.Errorf("gateway: no control plane has answered the revocation feed for %s (the bound is %s): refusing until one does", r.clock.Now().Sub(r.brokenAt).Round(time.Second), r.maxStale)
	}
	if r.serials[serial] {
		return fmt.Errorf("certificate %s is revoked", serial)
	}
	for _, id := range append([]string{c.Subject}, c.Chain()...) {
		if st := r.agents[id]; st != "" {
			if id == c.Subject {
				return fmt.Errorf("agent %s is %s", id, st)
			}
			return fmt.Errorf("ancestor %s of %s is %s", id, c.Subject, st)
		}
	}
	if r.jtis[c.ID] {
		return errors.New("token is revoked")
	}
	for _, j := range c.Delegation {
		if r.jtis[j] {
			return errors.New("a token of the delegation chain is revoked")
		}
	}
	return nil
}

// Track registers an open connection of a verified caller, so that a
// revocation closes it. It returns false, and the caller must refuse, if
// the caller is already revoked.
func (r *Revocations) Track(c net.Conn, serial, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.serials[serial] || r.agents[id] != "" {
		return false
	}
	for anc, st := range r.agents {
		if st != "" && isSelfOrDescendant(id, anc) {
			return false
		}
	}
	r.conns[c] = connOwner{serial: serial, id: id}
	return true
}

// Forget drops a closed connection.
func (r *Revocations) Forget(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// connSerial returns the hex serial and SPIFFE ID of a TLS connection's
// client certificate.
func connSerial(cs tls.ConnectionState) (string, string) {
	if len(cs.PeerCertificates) == 0 {
		return "", ""
	}
	leaf := cs.PeerCertificates[0]
	id := ""
	if len(leaf.URIs) == 1 {
		id = leaf.URIs[0].String()
	}
	return hex.EncodeToString(leaf.SerialNumber.Bytes()), id
}

// EventSource is the control plane's audit event stream, in process
// (*audit.Log with its store) or remote (the SSE endpoint).
type EventSource interface {
	// Follow calls apply for every event with one of actions after seq,
	// backlog first; caughtUp is called once the backlog is done. It
	// returns when ctx ends or the stream breaks.
	Follow(ctx context.Context, after int64, actions []string, apply func(audit.Event), caughtUp func()) error
}

// Feed keeps r current from src until ctx ends, resuming after breaks. A
// feed that broke after catching up resumes at once (a replica stopped:
// the source fails over to another); one that could not catch up waits
// for retry before trying again.
func (r *Revocations) Feed(ctx context.Context, src EventSource, retry func(context.Context) bool) error {
	for {
		caughtUp := false
		err := src.Follow(ctx, r.Seq(), feedActions(), r.Apply, func() { caughtUp = true; r.SetReady() })
		if ctx.Err() != nil {
			return nil
		}
		r.broken()
		r.logger.Warn("revocation feed broke; resuming", "err", err, "after", r.Seq())
		if !caughtUp && !retry(ctx) {
			return nil
		}
	}
}

// LogSource follows an in-process audit log.
type LogSource struct {
	Log    *audit.Log
	Reader audit.Reader
}

// Follow implements EventSource.
func (s LogSource) Follow(ctx context.Context, after int64, actions []string, apply func(audit.Event), caughtUp func()) error {
	want := map[string]bool{}
	for _, a := range actions {
		want[a] = true
	}
	live, cancel := s.Log.Subscribe(func(ev audit.Event) bool { return want[ev.Action] }, 4096)
	defer cancel()
	for {
		rows, err := s.Reader.Events(ctx, audit.Query{AfterSeq: after, Actions: actions, Limit: 1000})
		if err != nil {
			return err
		}
		for _, row := range rows {
			ev, err := audit.EventFromRow(row)
			if err != nil {
				return err
			}
			apply(ev)
			after = ev.Seq
		}
		if len(rows) < 1000 {
			break
		}
	}
	caughtUp()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-live:
			if !ok {
				return errors.New("fell behind the event stream")
			}
			if ev.Seq > after {
				apply(ev)
				after = ev.Seq
			}
		}
	}
}
