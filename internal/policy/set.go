package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"iter"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/cedar-policy/cedar-go"
)

// File is one file of a policy set: Cedar policies (NAME.cedar) or a schema
// fragment (NAME.cedarschema). Name is the path relative to the set's
// directory, with forward slashes.
type File struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// Limits on a policy set.
const (
	MaxFiles    = 10_000
	MaxSetBytes = 64 << 20
)

// Extensions of policy set files.
const (
	PolicyExt = ".cedar"
	SchemaExt = ".cedarschema"
)

// idAnnotation names a policy; without it a policy's id is FILE#N.
const idAnnotation = "id"

// Set is a compiled policy set: parsed, validated against the schema and
// indexed. It is immutable and safe for concurrent use.
type Set struct {
	version  int64
	digest   string
	schema   *Schema
	files    []File
	ids      []cedar.PolicyID
	policies []*cedar.Policy
	byID     map[cedar.PolicyID]int
	index    *index
	// infos memoizes info: a policy's text is marshalled from its AST,
	// and the blast radius asks for the same policies for every item.
	infos sync.Map // policy ID → PolicyInfo
}

// Compile parses, validates and indexes a policy set. It reports every
// problem it finds, each located by file, line and column, as Errors.
func Compile(files []File) (*Set, error) {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	var errs Errors
	total := 0
	var fragments, policyFiles []File
	for i, f := range files {
		total += len(f.Content)
		switch {
		case !validFileName(f.Name):
			errs = append(errs, &Error{File: f.Name, Msg: "file name must be a relative path ending in .cedar or .cedarschema"})
		case i > 0 && files[i-1].Name == f.Name:
			errs = append(errs, &Error{File: f.Name, Msg: "file appears twice"})
		case strings.HasSuffix(f.Name, SchemaExt):
			fragments = append(fragments, f)
		default:
			policyFiles = append(policyFiles, f)
		}
	}
	if len(files) > MaxFiles || total > MaxSetBytes {
		return nil, Errors{{File: "(policy set)", Msg: fmt.Sprintf("a policy set is limited to %d files and %d bytes", MaxFiles, MaxSetBytes)}}
	}
	sch, err := NewSchema(fragments)
	if err != nil {
		if e, ok := err.(*Error); ok {
			return nil, append(errs, e)
		}
		return nil, err
	}
	s := &Set{schema: sch, files: files, byID: map[cedar.PolicyID]int{}}
	for _, f := range policyFiles {
		list, err := cedar.NewPolicyListFromBytes(f.Name, []byte(f.Content))
		if err != nil {
			errs = append(errs, located(f.Name, err))
			continue
		}
		for n, p := range list {
			pos := p.Position()
			at := func(msg string, id cedar.PolicyID) *Error {
				return &Error{File: f.Name, Line: pos.Line, Column: pos.Column, Policy: string(id), Msg: msg}
			}
			id := cedar.PolicyID(fmt.Sprintf("%s#%d", f.Name, n))
			if v, ok := p.Annotations()[idAnnotation]; ok {
				if strings.TrimSpace(string(v)) == "" {
					errs = append(errs, at("@id is empty", ""))
					continue
				}
				id = cedar.PolicyID(v)
			}
			if prev, dup := s.byID[id]; dup {
				o := s.policies[prev].Position()
				errs = append(errs, at(fmt.Sprintf("id is already used by the policy at %s:%d:%d", o.Filename, o.Line, o.Column), id))
				continue
			}
			if err := sch.validatePolicy(id, p); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					line = strings.TrimPrefix(line, "for policy `"+string(id)+"`, ")
					errs = append(errs, at(line, id))
				}
				continue
			}
			s.byID[id] = len(s.policies)
			s.ids = append(s.ids, id)
			s.policies = append(s.policies, p)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.finish()
	s.digest = Digest(files)
	return s, nil
}

// finish indexes the set's policies.
func (s *Set) finish() { s.index = newIndex(s.ids, s.policies) }

func validFileName(name string) bool {
	if name == "" || len(name) > 512 || strings.ContainsAny(name, "\\\x00") || path.IsAbs(name) || path.Clean(name) != name || strings.HasPrefix(name, "../") {
		return false
	}
	return strings.HasSuffix(name, PolicyExt) || strings.HasSuffix(name, SchemaExt)
}

// Digest identifies a policy set's content: SHA-256 over its files in name
// order.
func Digest(files []File) string {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s\n%d:", len(f.Name), f.Name, len(f.Content))
		h.Write([]byte(f.Content))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Version is the set's version number, 0 if it was never stored.
func (s *Set) Version() int64 { return s.version }

// Len is the number of policies.
func (s *Set) Len() int { return len(s.policies) }

// Digest is the content digest (see Digest).
func (s *Set) Digest() string { return s.digest }

// Files returns the set's files.
func (s *Set) Files() []File { return slices.Clone(s.files) }

// Policy returns a policy by id.
func (s *Set) Policy(id string) (*cedar.Policy, bool) {
	i, ok := s.byID[cedar.PolicyID(id)]
	if !ok {
		return nil, false
	}
	return s.policies[i], true
}

// result is what cedar-go concluded for a request, before Bulkhead's rule
// that an error anywhere denies.
type result struct {
	decision   cedar.Decision
	diag       cedar.Diagnostic
	considered int // policies evaluated
}

// candidateSet is the PolicyIterator cedar-go evaluates: only the
// candidates the index found. Its iterator function is made once per
// candidateSet (they are pooled), not once per evaluation.
type candidateSet struct {
	list []entry
	seq  iter.Seq2[cedar.PolicyID, *cedar.Policy]
}

func newCandidateSet() *candidateSet {
	c := &candidateSet{}
	c.seq = func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for i := range c.list {
			if e := &c.list[i]; !yield(e.id, e.eval) {
				return
			}
		}
	}
	return c
}

func (c *candidateSet) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] { return c.seq }

// scratch holds per-evaluation buffers, reused to keep the hot path's
// allocations to what cedar-go itself makes.
type scratch struct {
	a, r []key
	set  *candidateSet
}

var scratchPool = sync.Pool{New: func() any { return &scratch{set: newCandidateSet()} }}

// evaluate decides req with the indexed candidates only. ents must resolve
// entities and their ancestors the way cedar-go does (see view).
func (s *Set) evaluate(ents ancestry, req cedar.Request) result {
	sc := scratchPool.Get().(*scratch)
	sc.a = s.index.actions.requestKeys(sc.a[:0], req.Action, ents.ancestors(req.Action))
	sc.r = s.index.res.requestKeys(sc.r[:0], req.Resource, ents.ancestors(req.Resource))
	own, buckets := ents.principalBuckets(s.index, req.Principal)
	sc.set.list = candidates(sc.set.list[:0], own, buckets, sc.a, sc.r)
	d, diag := cedar.Authorize(sc.set, ents, req)
	res := result{decision: d, diag: diag, considered: len(sc.set.list)}
	clear(sc.set.list) // drop the policy pointers the pool would keep
	scratchPool.Put(sc)
	return res
}
