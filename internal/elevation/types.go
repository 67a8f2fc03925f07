package elevation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// StoredManifest is a version of a manifest as kept: its source, what it
// parsed to, and the policies compiled from it.
type StoredManifest struct {
	Manifest
	Version   int64
	Source    string // the YAML as applied
	Policies  string // the compiled Cedar
	Digest    string // of the compiled policies
	CreatedAt time.Time
	CreatedBy string
}

// TaskStatus is a task's lifecycle state.
type TaskStatus string

// Task states. Only an open task (before its deadline) has grants.
const (
	TaskOpen      TaskStatus = "open"
	TaskCompleted TaskStatus = "completed"
	TaskCancelled TaskStatus = "cancelled"
	TaskExpired   TaskStatus = "expired"
)

// Task is a unit of an agent's work under a manifest.
type Task struct {
	ID string
	// Agent is the SPIFFE ID of the agent that opened it; it and its
	// sub-agents work in it.
	Agent           string
	Manifest        string
	ManifestVersion int64
	Description     string
	Status          TaskStatus
	// Tainted says the task received output from a tool whose output may
	// carry injected instructions; TaintSource names that tool.
	Tainted     bool
	TaintedAt   time.Time
	TaintSource string
	OpenedAt    time.Time
	Deadline    time.Time
	EndedAt     time.Time
	EndedBy     string
	EndReason   string
}

// OpenAt reports whether the task is open at now: its status and its
// deadline both say so, whatever the sweeper has yet to record.
func (t Task) OpenAt(now time.Time) bool { return t.Status == TaskOpen && now.Before(t.Deadline) }

// TaskEndedError refuses what needs an open task (a token for it, an
// elevation in it) once the task has ended: it says how and when, and
// what to do instead. It wraps fault.Conflict.
type TaskEndedError struct {
	Task     string
	Manifest string
	// Status is how it ended: completed, cancelled or expired.
	Status TaskStatus
	// At is when it ended (for an expiry, its deadline).
	At     time.Time
	Reason string
}

func (e *TaskEndedError) Error() string {
	msg := fmt.Sprintf("task %s ended: %s", e.Task, e.Status)
	if !e.At.IsZero() {
		msg += " at " + e.At.UTC().Format(time.RFC3339)
	}
	if e.Reason != "" {
		msg += fmt.Sprintf(" (%q)", e.Reason)
	}
	return msg + fmt.Sprintf("; an ended task cannot be used again: open a new task of manifest %s (POST /v1/tasks, bulkhead task start), or work without one, at baseline", e.Manifest)
}

// Unwrap makes the error a fault.Conflict.
func (e *TaskEndedError) Unwrap() error { return fault.Conflict }

// Ended explains how t, which is not open, ended. An expiry happened at
// the deadline, whether or not the sweeper has recorded it yet.
func (t Task) Ended() *TaskEndedError {
	e := &TaskEndedError{Task: t.ID, Manifest: t.Manifest, Status: t.Status, At: t.EndedAt, Reason: t.EndReason}
	switch t.Status {
	case TaskOpen:
		e.Status, e.At, e.Reason = TaskExpired, t.Deadline, ""
	case TaskExpired:
		e.At = t.Deadline
	}
	return e
}

// Status is an elevation's state.
type Status string

// Elevation states: a request is pending until approved (then active: a
// grant in force), denied, or expired; a grant ends exhausted, expired,
// revoked, or when its task ends.
const (
	StatusPending   Status = "pending"
	StatusActive    Status = "active"
	StatusDenied    Status = "denied"
	StatusExpired   Status = "expired"
	StatusExhausted Status = "exhausted"
	StatusRevoked   Status = "revoked"
	StatusEnded     Status = "ended"
)

// Elevation is a request for one of a task's triggers and, once approved,
// the grant it puts in force.
type Elevation struct {
	ID   string
	Task string
	// Agent is the requester's SPIFFE ID.
	Agent         string
	Manifest      string
	Trigger       string
	Justification string
	// Approval and Sensitivity are the trigger's, as of the request.
	Approval    string
	Sensitivity string
	// Tainted is the task's taint when the request was made.
	Tainted     bool
	Status      Status
	RequestedAt time.Time
	// RequestExpiresAt is when a pending request lapses unanswered.
	RequestExpiresAt time.Time
	// The grant, once active: in force until ExpiresAt, for MaxUses calls
	// (0: any number).
	GrantedAt time.Time
	ExpiresAt time.Time
	MaxUses   int64
	Uses      int64
	// EndedAt, EndedBy and EndReason say who or what ended it, and why.
	EndedAt   time.Time
	EndedBy   string
	EndReason string
	Approvals []Approval
}

// InForce reports whether the grant works at now (its task's state aside).
func (e Elevation) InForce(now time.Time) bool {
	return e.Status == StatusActive && now.Before(e.ExpiresAt) && (e.MaxUses == 0 || e.Uses < e.MaxUses)
}

// Approval is one approver's consent to an elevation, bound to it and to
// its task.
type Approval struct {
	Elevation string
	Task      string
	// Approver is the approver's SPIFFE ID, or "bulkhead" for the
	// approval policy deciding alone.
	Approver string
	Reason   string
	At       time.Time
}

// Grant is what an approval puts in force.
type Grant struct {
	ExpiresAt time.Time
	MaxUses   int64
}

// Filter selects elevations; empty fields select all.
type Filter struct {
	Task     string
	Statuses []Status
}

// ApprovalPolicySet is a stored version of the approval policy set.
type ApprovalPolicySet struct {
	Version   int64
	Files     []PolicyFile
	Digest    string
	CreatedAt time.Time
	CreatedBy string
}

// PolicyFile is one Cedar file of the approval policy set.
type PolicyFile struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// Store is what elevation keeps. Errors wrap fault.NotFound for a missing
// row and fault.Conflict for a state that forbids the change.
type Store interface {
	// PutManifest stores m, which must be the next version of its name
	// (fault.Conflict if another was stored meanwhile). In the same
	// transaction it makes the compiled policies the manifest's managed
	// policy set and increases the policy generation, so every PDP loads
	// them.
	PutManifest(ctx context.Context, m StoredManifest) error
	// GetManifest returns a manifest's latest version.
	GetManifest(ctx context.Context, name string) (StoredManifest, error)
	// ListManifests returns every manifest's latest version.
	ListManifests(ctx context.Context) ([]StoredManifest, error)

	CreateTask(ctx context.Context, t Task) error
	GetTask(ctx context.Context, id string) (Task, error)
	// ListTasks lists tasks, newest first; openOnly keeps open ones.
	ListTasks(ctx context.Context, openOnly bool) ([]Task, error)
	// EndTask moves an open task to status and, in the same transaction,
	// ends every pending or active elevation of it. It returns the ended
	// elevations; fault.Conflict if the task is not open.
	EndTask(ctx context.Context, id string, status TaskStatus, at time.Time, by, reason string) ([]Elevation, error)
	// TaintTask marks an open task tainted; false if it already was (or
	// is not open).
	TaintTask(ctx context.Context, id string, at time.Time, source string) (bool, error)
	// TasksDue lists open tasks whose deadline is not after now.
	TasksDue(ctx context.Context, now time.Time) ([]Task, error)

	// CreateElevation stores a pending elevation if its task is open at
	// e.RequestedAt; fault.Conflict otherwise.
	CreateElevation(ctx context.Context, e Elevation) error
	// GetElevation returns an elevation with its approvals.
	GetElevation(ctx context.Context, id string) (Elevation, error)
	ListElevations(ctx context.Context, f Filter) ([]Elevation, error)
	// Approve records a (one per approver) on a's elevation if it is
	// pending, unexpired at a.At, and its task open then; with grant, it
	// also puts the elevation in force, in the same transaction.
	// fault.Conflict if any of that does not hold.
	Approve(ctx context.Context, a Approval, grant *Grant) error
	// SetStatus moves an elevation from one of from to to;
	// fault.Conflict if it is in another state.
	SetStatus(ctx context.Context, id string, from []Status, to Status, at time.Time, by, reason string) error
	// UseGrant spends one use of an active grant if it is in force at now
	// and its task is open at now, in one statement; it marks the grant
	// exhausted when that was the last use, and returns it after the use.
	// fault.Conflict if the grant cannot be used.
	UseGrant(ctx context.Context, id string, now time.Time) (Elevation, error)
	// ElevationsDue lists pending elevations whose request lapsed and
	// active ones whose grant expired, at now.
	ElevationsDue(ctx context.Context, now time.Time) ([]Elevation, error)
	// StandingGrants counts grants in force at now whose task is not open
	// at now: zero, by construction.
	StandingGrants(ctx context.Context, now time.Time) (int64, error)

	// ApprovalPolicy returns the latest approval policy set;
	// fault.NotFound if none was ever stored (the default applies).
	ApprovalPolicy(ctx context.Context) (ApprovalPolicySet, error)
	// PutApprovalPolicy stores the next version.
	PutApprovalPolicy(ctx context.Context, p ApprovalPolicySet) (int64, error)
}

// idRE is the form of task and elevation ids.
var idRE = regexp.MustCompile(`^(tk|el)_[0-9a-f]{24}$`)

func newID(prefix string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("elevation: random id: %w", err)
	}
	return prefix + "_" + hex.EncodeToString(b[:]), nil
}

// ValidateTaskID checks a task id from outside.
func ValidateTaskID(id string) error {
	if !idRE.MatchString(id) || !strings.HasPrefix(id, "tk_") {
		return fmt.Errorf("%w: %q is not a task id (tk_...)", fault.Invalid, id)
	}
	return nil
}

// ValidateElevationID checks an elevation id from outside.
func ValidateElevationID(id string) error {
	if !idRE.MatchString(id) || !strings.HasPrefix(id, "el_") {
		return fmt.Errorf("%w: %q is not an elevation id (el_...)", fault.Invalid, id)
	}
	return nil
}
