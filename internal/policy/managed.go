package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Managed policy sets are compiled by Bulkhead from task manifests (see
// internal/elevation) rather than applied by an operator. Each is scoped to
// one manifest: the PDP evaluates it beside the live set, with Cedar's
// semantics over the union (forbid wins, any error denies), only for
// requests whose context.manifest names it. They live apart from the
// operator's versions, so 'policy apply' and 'policy rollback' never drop
// them; both refuse a set whose schema would leave a managed set unable to
// compile.

// ManagedSet is the policy set compiled from one manifest.
type ManagedSet struct {
	// Name is the manifest's name: requests whose context.manifest equals
	// it are evaluated against the set.
	Name string
	// Version is the manifest version the set was compiled from.
	Version int64
	// Files are Cedar policy files (no schema: managed sets are validated
	// against the live set's schema).
	Files  []File
	Digest string
}

// ManagedSource lists the managed sets. Every change to them increases
// State.Generation in the same transaction, so PDPs load it like any other
// change.
type ManagedSource interface {
	ManagedSets(ctx context.Context) ([]ManagedSet, error)
}

// ManagedPrefix begins the id of every managed policy, which reads
// "manifest:NAME:...". Operators' policy sets may not use it, so a decision's
// reasons tell a manifest's policies from the operator's.
const ManagedPrefix = "manifest:"

// managedEntry is a managed set as a snapshot holds it: compiled, or why it
// could not be (then its manifest's requests are denied).
type managedEntry struct {
	set *compiledSet
	err error
	// key is what it was compiled from: the set's digest and the schema's.
	key string
}

// schemaFiles returns the schema fragments of s (none for nil: the base
// schema alone).
func schemaFiles(s *Set) []File {
	if s == nil {
		return nil
	}
	var out []File
	for _, f := range s.files {
		if strings.HasSuffix(f.Name, SchemaExt) {
			out = append(out, f)
		}
	}
	return out
}

// compileManaged compiles m against the schema of live (nil: the base
// schema). Every policy must carry an id of the manifest's own prefix, so
// that no manifest can pass its policies off as another's.
func compileManaged(live *Set, m ManagedSet) (*compiledSet, error) {
	files := schemaFiles(live)
	for _, f := range m.Files {
		if !strings.HasSuffix(f.Name, PolicyExt) {
			return nil, Errors{{File: f.Name, Msg: "a managed set holds only .cedar files"}}
		}
		files = append(files, File{Name: "managed/" + m.Name + "/" + f.Name, Content: f.Content})
	}
	s, err := Compile(files)
	if err != nil {
		return nil, err
	}
	prefix := ManagedPrefix + m.Name + ":"
	for _, id := range s.ids {
		if !strings.HasPrefix(string(id), prefix) {
			return nil, Errors{{File: "managed/" + m.Name, Policy: string(id), Msg: "a managed policy's id must begin with " + prefix}}
		}
	}
	s.version = m.Version
	return newCompiledSet(s), nil
}

// loadManaged compiles the managed sets for a snapshot whose live set is
// live, reusing cur's compilations of unchanged sets.
func (p *PDP) loadManaged(ctx context.Context, live *compiledSet, cur *snapshot) (map[string]*managedEntry, error) {
	if p.managed == nil {
		return nil, nil
	}
	sets, err := p.managed.ManagedSets(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: load managed sets: %w", err)
	}
	var liveSet *Set
	if live != nil {
		liveSet = live.Set
	}
	schemaKey := Digest(schemaFiles(liveSet))
	out := make(map[string]*managedEntry, len(sets))
	for _, m := range sets {
		key := m.Digest + " " + schemaKey
		if cur != nil {
			if e := cur.managed[m.Name]; e != nil && e.key == key {
				out[m.Name] = e
				continue
			}
		}
		cs, err := compileManaged(liveSet, m)
		if err != nil {
			p.logger.Error("a manifest's policies do not compile; its tasks are denied", "manifest", m.Name, "err", err)
		}
		out[m.Name] = &managedEntry{set: cs, err: err, key: key}
	}
	return out, nil
}

// requestManifest returns the manifest a prepared request names.
func (pr *prepared) requestManifest() (string, bool) {
	m, ok := pr.ctx[ctxManifest].(cedar.String)
	return string(m), ok
}

// withManaged adds the evaluation of the manifest's managed set to base, the
// live set's result. A manifest without a loaded set denies with an error:
// its prohibitions cannot be known, so nothing it scopes is allowed.
func (s *snapshot) withManaged(v *view, req cedar.Request, manifest string, base result) result {
	e := s.managed[manifest]
	if e == nil || e.set == nil {
		msg := fmt.Sprintf("no policies are loaded for manifest %q", manifest)
		if e != nil && e.err != nil {
			msg = fmt.Sprintf("the policies of manifest %q do not compile: %v", manifest, e.err)
		}
		out := base
		out.diag.Errors = append(slices.Clone(base.diag.Errors), cedar.DiagnosticError{PolicyID: cedar.PolicyID(ManagedPrefix + manifest), Message: msg})
		return out
	}
	v.useActions(e.set.actions)
	return combine(base, e.set.evaluate(v, req))
}

// combine is Cedar's decision over the union of two disjoint policy sets,
// from the decisions over each: any satisfied forbid denies, with every
// satisfied forbid as a reason; otherwise any satisfied permit allows, with
// every satisfied permit as a reason; errors accumulate (and Bulkhead's rule
// that an error denies applies later, in conclude).
func combine(a, b result) result {
	out := result{decision: cedar.Deny, considered: a.considered + b.considered}
	out.diag.Errors = append(slices.Clone(a.diag.Errors), b.diag.Errors...)
	forbids := func(r result) bool { return r.decision == cedar.Deny && len(r.diag.Reasons) > 0 }
	switch {
	case forbids(a) || forbids(b):
		for _, r := range []result{a, b} {
			if forbids(r) {
				out.diag.Reasons = append(out.diag.Reasons, r.diag.Reasons...)
			}
		}
	case a.decision == cedar.Allow || b.decision == cedar.Allow:
		out.decision = cedar.Allow
		for _, r := range []result{a, b} {
			if r.decision == cedar.Allow {
				out.diag.Reasons = append(out.diag.Reasons, r.diag.Reasons...)
			}
		}
	}
	return out
}

// CheckManaged reports whether m compiles against the live set's schema,
// as it must before it is stored (errors are Errors, a fault.Invalid).
func (s *Service) CheckManaged(_ context.Context, m ManagedSet) error {
	if err := ValidateName("manifest", m.Name); err != nil {
		return err
	}
	var live *Set
	if snap := s.snap.Load(); snap != nil && snap.live != nil {
		live = snap.live.Set
	}
	_, err := compileManaged(live, m)
	return err
}

// checkReplacement refuses a policy set that would become live but uses
// the managed id prefix, or whose schema would break a managed set.
func (s *Service) checkReplacement(ctx context.Context, set *Set) error {
	var errs Errors
	for _, id := range set.ids {
		if strings.HasPrefix(string(id), ManagedPrefix) {
			errs = append(errs, &Error{File: "(policy set)", Policy: string(id), Msg: "ids beginning with " + ManagedPrefix + " are reserved for manifests' policies"})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if s.managed == nil {
		return nil
	}
	sets, err := s.managed.ManagedSets(ctx)
	if err != nil {
		return fmt.Errorf("%w: read manifests' policies: %w", fault.Unavailable, err)
	}
	for _, m := range sets {
		if _, err := compileManaged(set, m); err != nil {
			var pe Errors
			if errors.As(err, &pe) {
				return fmt.Errorf("%w: this policy set's schema breaks the policies of manifest %q: %w", fault.Invalid, m.Name, err)
			}
			return err
		}
	}
	return nil
}

// managedInfo describes a policy of the manifest's managed set.
func (s *snapshot) managedInfo(manifest, id string) (PolicyInfo, bool) {
	e := s.managed[manifest]
	if e == nil || e.set == nil {
		return PolicyInfo{}, false
	}
	if _, ok := e.set.Policy(id); !ok {
		return PolicyInfo{}, false
	}
	return e.set.info(id), true
}
