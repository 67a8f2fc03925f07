package elevation

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The approval policy set decides, apart from the policies that authorize
// agents' actions, whether an elevation may be put in force: by policy
// alone (principal Bulkhead) when it is requested, or after each human
// approval (principal Human). It is Cedar, evaluated with cedar-go against
// a schema that ships with Bulkhead (approval/approval.cedarschema);
// operators may replace its policies (default: approval/default.cedar).
// Code sets the floor whatever the policies say: see Service.Approve.

//go:embed approval/approval.cedarschema approval/default.cedar
var approvalFS embed.FS

// Entity types and the action of the approval schema.
const (
	typeHuman     cedar.EntityType = "Human"
	typeAgent     cedar.EntityType = "Agent"
	typeBulkhead  cedar.EntityType = "Bulkhead"
	typeElevation cedar.EntityType = "Elevation"
)

var actionApprove = cedar.NewEntityUID("Action", "approve")

// ApprovalSchema returns the approval schema's text.
func ApprovalSchema() string {
	b, _ := approvalFS.ReadFile("approval/approval.cedarschema")
	return string(b)
}

// DefaultApprovalPolicy returns the default approval policy set.
func DefaultApprovalPolicy() []PolicyFile {
	b, _ := approvalFS.ReadFile("approval/default.cedar")
	return []PolicyFile{{Name: "default.cedar", Content: string(b)}}
}

var (
	approvalValidatorOnce sync.Once
	approvalValidator     *validate.Validator
	approvalValidatorErr  error
)

func validator() (*validate.Validator, error) {
	approvalValidatorOnce.Do(func() {
		var s schema.Schema
		s.SetFilename("approval.cedarschema")
		if err := s.UnmarshalCedar([]byte(ApprovalSchema())); err != nil {
			approvalValidatorErr = fmt.Errorf("elevation: approval schema: %w", err)
			return
		}
		r, err := s.Resolve()
		if err != nil {
			approvalValidatorErr = fmt.Errorf("elevation: approval schema: %w", err)
			return
		}
		approvalValidator = validate.New(r)
	})
	return approvalValidator, approvalValidatorErr
}

// approvalSet is a compiled approval policy set.
type approvalSet struct {
	version int64
	digest  string
	ps      *cedar.PolicySet
}

// CompileApprovalPolicy parses the files and validates every policy
// against the approval schema. Policy ids come from @id annotations, or
// FILE#N.
func CompileApprovalPolicy(files []PolicyFile) (*cedar.PolicySet, error) {
	v, err := validator()
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: an approval policy set needs at least one file", fault.Invalid)
	}
	ps := cedar.NewPolicySet()
	var errs []error
	total := 0
	for _, f := range files {
		total += len(f.Content)
		if !strings.HasSuffix(f.Name, ".cedar") || strings.ContainsAny(f.Name, "/\\\x00") || len(f.Name) > 255 {
			errs = append(errs, fmt.Errorf("%w: %q: an approval policy file is NAME.cedar", fault.Invalid, f.Name))
			continue
		}
		list, err := cedar.NewPolicyListFromBytes(f.Name, []byte(f.Content))
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", fault.Invalid, f.Name, err))
			continue
		}
		for i, p := range list {
			id := cedar.PolicyID(fmt.Sprintf("%s#%d", f.Name, i))
			if a, ok := p.Annotations()["id"]; ok && strings.TrimSpace(string(a)) != "" {
				id = cedar.PolicyID(a)
			}
			if err := v.Policy(string(id), (*xast.Policy)(p.AST())); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s: policy %q: %w", fault.Invalid, f.Name, id, err))
				continue
			}
			if !ps.Add(id, p) {
				errs = append(errs, fmt.Errorf("%w: %s: policy id %q is used twice", fault.Invalid, f.Name, id))
			}
		}
	}
	if total > 1<<20 {
		errs = append(errs, fmt.Errorf("%w: an approval policy set is limited to 1 MiB", fault.Invalid))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ps, nil
}

// approvalQuestion is what the approval policy decides about: approver
// asks to put e in force with these approvals counted.
type approvalQuestion struct {
	principal cedar.EntityUID
	e         Elevation
	trigger   Trigger
	approvers []string
}

// approvalAnswer is the policy's answer. A forbid refuses the approval;
// no permit means not yet (more approvals are needed).
type approvalAnswer struct {
	allowed   bool
	forbidden bool
	reasons   []string
}

func (s *approvalSet) decide(q approvalQuestion) (approvalAnswer, error) {
	uid := cedar.NewEntityUID(typeElevation, cedar.String(q.e.ID))
	res := cedar.Entity{UID: uid, Attributes: cedar.NewRecord(cedar.RecordMap{
		"agent":            cedar.String(q.e.Agent),
		"task":             cedar.String(q.e.Task),
		"manifest":         cedar.String(q.e.Manifest),
		"trigger":          cedar.String(q.e.Trigger),
		"justification":    cedar.String(q.e.Justification),
		"tainted":          cedar.Boolean(q.e.Tainted),
		"sensitivity":      cedar.String(q.trigger.Sensitivity),
		"approval":         cedar.String(q.trigger.Approval),
		"max_uses":         cedar.Long(q.trigger.MaxUses),
		"duration_seconds": cedar.Long(int64(time.Duration(q.trigger.MaxDuration) / time.Second)),
	})}
	approvers := make([]cedar.Value, len(q.approvers))
	for i, a := range q.approvers {
		approvers[i] = cedar.String(a)
	}
	ents := cedar.EntityMap{uid: res, q.principal: cedar.Entity{UID: q.principal}, actionApprove: cedar.Entity{UID: actionApprove}}
	req := cedar.Request{Principal: q.principal, Action: actionApprove, Resource: uid, Context: cedar.NewRecord(cedar.RecordMap{
		"approvals": cedar.Long(len(q.approvers)),
		"approvers": cedar.NewSet(approvers...),
	})}
	d, diag := cedar.Authorize(s.ps, ents, req)
	if len(diag.Errors) > 0 {
		msgs := make([]string, len(diag.Errors))
		for i, e := range diag.Errors {
			msgs[i] = string(e.PolicyID) + ": " + e.Message
		}
		// An approval policy that fails refuses: fail closed.
		return approvalAnswer{}, fmt.Errorf("%w: the approval policy failed to evaluate: %s", fault.Forbidden, strings.Join(msgs, "; "))
	}
	a := approvalAnswer{allowed: d == cedar.Allow}
	for _, r := range diag.Reasons {
		a.reasons = append(a.reasons, string(r.PolicyID))
	}
	slices.Sort(a.reasons)
	a.forbidden = !a.allowed && len(a.reasons) > 0
	return a, nil
}

// approvalPolicy returns the approval policy set in force: the latest
// stored version, or the default. Compiled versions are cached; a store
// error refuses (the caller fails closed).
func (s *Service) approvalPolicy(ctx context.Context) (*approvalSet, error) {
	stored, err := s.store.ApprovalPolicy(ctx)
	switch {
	case errors.Is(err, fault.NotFound):
		stored = ApprovalPolicySet{Version: 0, Files: DefaultApprovalPolicy()}
	case err != nil:
		return nil, fmt.Errorf("%w: read the approval policy: %w", fault.Unavailable, err)
	}
	s.approvalMu.Lock()
	defer s.approvalMu.Unlock()
	if c := s.approval; c != nil && c.version == stored.Version {
		return c, nil
	}
	ps, err := CompileApprovalPolicy(stored.Files)
	if err != nil {
		return nil, fmt.Errorf("%w: approval policy version %d does not compile: %w", fault.Unavailable, stored.Version, err)
	}
	s.approval = &approvalSet{version: stored.Version, digest: approvalDigest(stored.Files), ps: ps}
	return s.approval, nil
}

func approvalDigest(files []PolicyFile) string {
	pf := make([]policy.File, len(files))
	for i, f := range files {
		pf[i] = policy.File{Name: path.Clean(f.Name), Content: f.Content}
	}
	return policy.Digest(pf)
}

// ApplyApprovalPolicy replaces the approval policy set, by an operator,
// after validating every policy against the approval schema.
func (s *Service) ApplyApprovalPolicy(ctx context.Context, by peer.Principal, files []PolicyFile) (ApprovalPolicySet, error) {
	if by.Kind != audit.ActorOperator {
		return ApprovalPolicySet{}, fmt.Errorf("%w: only operators change the approval policy", fault.Forbidden)
	}
	if _, err := CompileApprovalPolicy(files); err != nil {
		return ApprovalPolicySet{}, err
	}
	now := s.clock.Now()
	p := ApprovalPolicySet{Files: files, Digest: approvalDigest(files), CreatedAt: now, CreatedBy: by.ID.String()}
	ev := audit.Event{Time: now, Actor: by.Actor(), Action: ActionApprovalPolicyApply, Target: "approval-policy",
		Digests: map[string]string{"approval_policy": p.Digest}, Detail: map[string]string{"files": fmt.Sprint(len(files))}}
	err := s.act(ctx, ev, func() error {
		v, err := s.store.PutApprovalPolicy(ctx, p)
		p.Version = v
		return err
	})
	if err != nil {
		return ApprovalPolicySet{}, unavailable(err)
	}
	return p, nil
}

// ApprovalPolicy returns the approval policy set in force (version 0: the
// default).
func (s *Service) ApprovalPolicy(ctx context.Context) (ApprovalPolicySet, error) {
	p, err := s.store.ApprovalPolicy(ctx)
	if errors.Is(err, fault.NotFound) {
		files := DefaultApprovalPolicy()
		return ApprovalPolicySet{Files: files, Digest: approvalDigest(files)}, nil
	}
	return p, unavailableUnlessKind(err)
}
