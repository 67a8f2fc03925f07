// Package secret keeps the upstream credentials that gateways inject into
// the requests they forward (an MCP server's bearer token, an API key), so
// that agents never hold them.
//
// Values are sealed at rest with the control plane's master key (see
// internal/secretbox), bound to the secret's name and version, so a copy of
// the database reveals none of them and a sealed value moved to another row
// does not open. Operators set, replace, list and delete secrets; only a
// gateway may read a value back (Reveal).
//
// Every set, delete and reveal is recorded in the audit log before it takes
// effect, naming the secret by reference only — its name and version, never
// the value nor a hash of it (a low-entropy secret could be recovered from
// its hash by guessing). If the record cannot be written, nothing happens.
package secret

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Actions this package records.
const (
	ActionSet    = "secret.set"
	ActionDelete = "secret.delete"
	ActionReveal = "secret.reveal"
)

// MaxValueSize bounds a secret's value: credentials are small, and the bound
// keeps one request or row from growing without limit.
const MaxValueSize = 64 << 10

// RevealComponents are the kinds of Bulkhead component (the first segment
// of the name below /bulkhead/) that may read values. The control plane's
// own serving identity (/bulkhead/server) and any future component that runs
// beside agents are not among them.
var RevealComponents = []string{"gateway"}

// Names are short and from a safe alphabet: they appear in gateway configs,
// URLs, audit records and logs.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName checks a secret name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: secret name %q must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", fault.Invalid, oneLine(name))
	}
	return nil
}

// oneLine keeps a rejected name from splitting a message or log line.
func oneLine(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// Target is how audit records (and gateways' decision records) refer to a
// secret.
func Target(name string) string { return "secret:" + name }

// Meta describes a stored secret without its value.
type Meta struct {
	Name string
	// Version counts the sets of this name, deletions included: each set
	// makes a new version, and a name deleted and set again continues the
	// count, so a version names one value for good.
	Version   int64
	CreatedAt time.Time // when this value's lineage was first set (after any deletion)
	UpdatedAt time.Time
	UpdatedBy string // SPIFFE ID
}

// Record is a stored secret: its metadata and its sealed value.
type Record struct {
	Meta
	Sealed []byte
}

// Store keeps sealed secrets. Errors wrap fault kinds: fault.NotFound for a
// missing (or deleted) secret, fault.Conflict when a compare-and-set fails.
type Store interface {
	// SecretHead returns the metadata of name's latest version, live or
	// deleted (the zero Meta if it was never set), and whether it is live.
	SecretHead(ctx context.Context, name string) (head Meta, live bool, err error)
	// PutSecret stores r as version r.Version of r.Name if the name's latest
	// version is r.Version-1 (0: never set); fault.Conflict otherwise. A
	// name that was deleted gets CreatedAt anew; a live one keeps it.
	PutSecret(ctx context.Context, r Record) error
	// GetSecret returns a live secret.
	GetSecret(ctx context.Context, name string) (Record, error)
	// ListSecrets returns the live secrets by name, without their values.
	ListSecrets(ctx context.Context) ([]Meta, error)
	// DeleteSecret deletes live version version of name, keeping the
	// version so that the count continues; fault.Conflict if name is not
	// live at that version.
	DeleteSecret(ctx context.Context, name string, version int64, at time.Time, by string) error
}

// Sealer seals and opens values bound to a label; *secretbox.Box is one.
type Sealer interface {
	Seal(label string, plaintext []byte) ([]byte, error)
	Open(label string, sealed []byte) ([]byte, error)
}

// Recorder commits audit events; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// Config holds a Service's dependencies; all are required.
type Config struct {
	Store  Store
	Box    Sealer
	Audit  Recorder
	Clock  clock.Clock
	Logger *slog.Logger
}

// Service manages secrets.
type Service struct {
	store  Store
	box    Sealer
	audit  Recorder
	clock  clock.Clock
	logger *slog.Logger
}

// New returns a Service. It fails if a dependency is missing: there is no
// degraded mode, and in particular no unsealed one.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Box == nil || cfg.Audit == nil || cfg.Clock == nil || cfg.Logger == nil {
		return nil, errors.New("secret: store, sealer, audit log, clock and logger are required")
	}
	return &Service{store: cfg.Store, box: cfg.Box, audit: cfg.Audit, clock: cfg.Clock, logger: cfg.Logger}, nil
}

// sealLabel binds a sealed value to its name and version: a value copied to
// another name, or an older version put back in place of the current one,
// does not open. The prefix keeps secrets apart from the other values the
// master key seals (token signing keys).
func sealLabel(name string, version int64) string {
	return "secret/" + name + "#" + strconv.FormatInt(version, 10)
}

// Set stores value under name as a new version, replacing any current one.
// Only operators set secrets.
func (s *Service) Set(ctx context.Context, by audit.Actor, name string, value []byte) (Meta, error) {
	if err := ValidateName(name); err != nil {
		return Meta{}, err
	}
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by, Action: ActionSet, Target: Target(name)}
	if by.Kind != audit.ActorOperator {
		return Meta{}, s.deny(ctx, ev, fmt.Errorf("%w: only operators set secrets", fault.Forbidden))
	}
	switch {
	case len(value) == 0:
		return Meta{}, fmt.Errorf("%w: the value of secret %q is empty", fault.Invalid, name)
	case len(value) > MaxValueSize:
		return Meta{}, fmt.Errorf("%w: the value of secret %q is over %d bytes", fault.TooLarge, name, MaxValueSize)
	}
	head, live, err := s.store.SecretHead(ctx, name)
	if err != nil {
		return Meta{}, fmt.Errorf("%w: secret %q: %w", fault.Unavailable, name, err)
	}
	version := head.Version + 1
	sealed, err := s.box.Seal(sealLabel(name, version), value)
	if err != nil {
		return Meta{}, fmt.Errorf("secret: seal %q: %w", name, err)
	}
	m := Meta{Name: name, Version: version, CreatedAt: now, UpdatedAt: now, UpdatedBy: by.ID}
	ev.Detail = map[string]string{"version": strconv.FormatInt(version, 10)}
	if live {
		m.CreatedAt = head.CreatedAt
		ev.Detail["replaces_version"] = strconv.FormatInt(head.Version, 10)
	}
	// Two operators (or replicas) setting one name at once: the store's
	// compare-and-set lets one win; the other's record is followed by a
	// failure record.
	err = s.act(ctx, ev, func() error { return s.store.PutSecret(ctx, Record{Meta: m, Sealed: sealed}) })
	if err != nil {
		return Meta{}, err
	}
	return m, nil
}

// Delete removes secret name. Gateways that reference it fail closed from
// then on: their upstream requests are refused, not sent without it.
func (s *Service) Delete(ctx context.Context, by audit.Actor, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	now := s.clock.Now()
	ev := audit.Event{Time: now, Actor: by, Action: ActionDelete, Target: Target(name)}
	if by.Kind != audit.ActorOperator {
		return s.deny(ctx, ev, fmt.Errorf("%w: only operators delete secrets", fault.Forbidden))
	}
	head, live, err := s.store.SecretHead(ctx, name)
	if err != nil {
		return fmt.Errorf("%w: secret %q: %w", fault.Unavailable, name, err)
	}
	if !live {
		return fmt.Errorf("%w: secret %q", fault.NotFound, name)
	}
	ev.Detail = map[string]string{"version": strconv.FormatInt(head.Version, 10)}
	return s.act(ctx, ev, func() error { return s.store.DeleteSecret(ctx, name, head.Version, now, by.ID) })
}

// List returns the live secrets' metadata, by name. Values are never
// listed.
func (s *Service) List(ctx context.Context) ([]Meta, error) {
	out, err := s.store.ListSecrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: list secrets: %w", fault.Unavailable, err)
	}
	return out, nil
}

// Reveal returns secret name's current value to by, which must be a
// gateway (a workload whose SPIFFE ID is under /bulkhead/gateway/).
//
// Agents never read secrets: keeping upstream credentials out of their
// reach is the point of injecting them at the gateway. Operators do not read
// them back either: an operator can replace a secret but not read it, so a
// stolen operator credential (a laptop, a CI job) can be used to break
// things but not to quietly copy every upstream credential, and the
// credential's real owner (the upstream's admin console) stays the one
// place it is shown. The value is never in a log, an error or a record.
func (s *Service) Reveal(ctx context.Context, by peer.Principal, name string) ([]byte, error) {
	v, err := s.RevealVersion(ctx, by, name)
	return v.Value, err
}

// Revealed is a revealed value and its version, which a gateway's records
// cite in place of the value.
type Revealed struct {
	Name    string
	Version int64
	Value   []byte
}

// RevealVersion is Reveal that also says which version it returned.
func (s *Service) RevealVersion(ctx context.Context, by peer.Principal, name string) (Revealed, error) {
	ev := audit.Event{Time: s.clock.Now(), Actor: by.Actor(), Action: ActionReveal, Target: Target(name)}
	if err := mayReveal(by); err != nil {
		return Revealed{}, s.deny(ctx, ev, err)
	}
	if err := ValidateName(name); err != nil {
		return Revealed{}, s.deny(ctx, ev, err)
	}
	r, err := s.store.GetSecret(ctx, name)
	if errors.Is(err, fault.NotFound) {
		// Evidence too: a gateway asking for a secret that does not exist
		// is misconfigured, or is not the gateway it claims to be.
		return Revealed{}, s.deny(ctx, ev, fmt.Errorf("%w: secret %q", fault.NotFound, name))
	}
	if err != nil {
		return Revealed{}, fmt.Errorf("%w: secret %q: %w", fault.Unavailable, name, err)
	}
	ev.Detail = map[string]string{"version": strconv.FormatInt(r.Version, 10)}
	var value []byte
	err = s.act(ctx, ev, func() error {
		var err error
		value, err = s.box.Open(sealLabel(name, r.Version), r.Sealed)
		if err != nil {
			// Not a fault kind: the caller sees "internal error", the log
			// says which secret (by name) failed to open.
			return fmt.Errorf("secret: %s version %d does not open (master key changed, or the row was tampered with): %w", Target(name), r.Version, err)
		}
		return nil
	})
	if err != nil {
		return Revealed{}, err
	}
	return Revealed{Name: name, Version: r.Version, Value: value}, nil
}

// mayReveal is the rule for Reveal, checked here and not only at the HTTP
// edge, so that no other caller of the service can skip it.
func mayReveal(p peer.Principal) error {
	if p.Kind != audit.ActorWorkload {
		return fmt.Errorf("%w: only gateways read secret values; %s is %s", fault.Forbidden, p.ID, orUnknown(string(p.Kind)))
	}
	// p.Name is KIND/NAME below /bulkhead/.
	component, instance, _ := strings.Cut(p.Name, "/")
	if instance != "" && slices.Contains(RevealComponents, component) {
		return nil
	}
	return fmt.Errorf("%w: only gateways read secret values; %s is not a gateway", fault.Forbidden, p.ID)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return "a " + s
}

// act records ev (decision allow) and only then runs do. If do fails, a
// second record says so; if the first record cannot be written, do never
// runs.
func (s *Service) act(ctx context.Context, ev audit.Event, do func() error) error {
	return audit.Act(ctx, s.audit, s.logger, ev, do)
}

// deny records a refusal and returns why. The refusal stands even if it
// cannot be recorded.
func (s *Service) deny(ctx context.Context, ev audit.Event, why error) error {
	audit.Refuse(ctx, s.audit, s.logger, ev, why)
	return why
}
