package policy

import (
	"context"
	"time"
)

// Version is a stored policy set. Versions are numbered from 1 and never
// change once written.
type Version struct {
	Number      int64
	Files       []File // empty in listings
	Digest      string
	Policies    int
	Shadow      bool // applied as a shadow candidate
	Description string
	CreatedAt   time.Time
	CreatedBy   string
}

// State is which versions are in force. Generation increases with every
// change the PDP must load (policies, roles, tools), so that every replica
// notices a change by polling one number.
type State struct {
	Live       int64 // 0: none; everything is denied
	Shadow     int64 // 0: no shadow evaluation
	Generation int64
}

// RoleAssignment is an agent's membership in a role.
type RoleAssignment struct {
	Agent     string
	Role      string
	CreatedAt time.Time
	CreatedBy string
}

// ShadowDiff is a request that the shadow set decided differently from the
// live set.
type ShadowDiff struct {
	DecisionID    string
	Time          time.Time
	ShadowVersion int64
	LiveVersion   int64
	Principal     string
	Action        string
	Resource      string
	LiveAllowed   bool
	ShadowAllowed bool
	LiveReasons   []string
	ShadowReasons []string
}

// ShadowStats counts shadow evaluations of a version.
type ShadowStats struct {
	Version   int64
	Evaluated int64
	// Unrecorded counts differences that were found but could not be
	// stored (the recorder's buffer was full).
	Unrecorded int64
}

// ShadowSummary is what the store knows of a shadow version's run.
type ShadowSummary struct {
	ShadowStats
	AllowToDeny int64
	DenyToAllow int64
}

// SnapshotStore is what the PDP loads.
type SnapshotStore interface {
	PolicyState(ctx context.Context) (State, error)
	// PolicyVersion returns a version with its files; fault.NotFound if
	// there is none.
	PolicyVersion(ctx context.Context, n int64) (Version, error)
	// PolicyAgents lists active agents with their roles.
	PolicyAgents(ctx context.Context) ([]AgentRoles, error)
	ToolCatalog(ctx context.Context) (Catalog, error)
}

// ShadowStore keeps what shadow evaluation found.
type ShadowStore interface {
	// RecordShadow stores differences (ignoring ones already stored) and
	// adds to the counts, in one transaction.
	RecordShadow(ctx context.Context, diffs []ShadowDiff, stats []ShadowStats) error
	// ShadowDiffs returns a version's differences, newest first; limit 0
	// means all.
	ShadowDiffs(ctx context.Context, version int64, limit int) ([]ShadowDiff, error)
	ShadowSummary(ctx context.Context, version int64) (ShadowSummary, error)
}

// Store is everything the policy service needs from storage. Every change
// bumps State.Generation in the same transaction.
type Store interface {
	SnapshotStore
	ShadowStore
	// CreatePolicyVersion stores v under the next number and makes it the
	// live version, or the shadow version if v.Shadow, in one transaction.
	CreatePolicyVersion(ctx context.Context, v Version) (int64, error)
	// UpdatePolicyState changes which versions are in force: fn gets the
	// current state under lock and returns the new one (or an error to
	// change nothing).
	UpdatePolicyState(ctx context.Context, fn func(State) (State, error)) (State, error)
	// ListPolicyVersions lists versions without their files, oldest first.
	ListPolicyVersions(ctx context.Context) ([]Version, error)

	// AddAgentRole assigns a role: fault.NotFound if the agent does not
	// exist, fault.Conflict if it holds the role already.
	AddAgentRole(ctx context.Context, a RoleAssignment) error
	// RemoveAgentRole: fault.NotFound if the agent does not hold the role.
	RemoveAgentRole(ctx context.Context, agent, role string) error
	// ListAgentRoles lists assignments by agent and role; agent "" lists
	// all.
	ListAgentRoles(ctx context.Context, agent string) ([]RoleAssignment, error)

	// ReplaceToolCatalog replaces the whole catalog.
	ReplaceToolCatalog(ctx context.Context, c Catalog) error
}
