package api

import (
	"encoding/json"
	"time"
)

// PolicyFile is one file of a policy set: NAME.cedar or NAME.cedarschema,
// named relative to the set's directory.
type PolicyFile struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// PolicyApplyRequest stores a policy set as a new version: live, or with
// Shadow the candidate evaluated beside the live set.
type PolicyApplyRequest struct {
	Files       []PolicyFile `json:"files"`
	Shadow      bool         `json:"shadow,omitempty"`
	Description string       `json:"description,omitempty"`
}

// PolicyVersion is a stored policy set.
type PolicyVersion struct {
	Version     int64     `json:"version"`
	Digest      string    `json:"digest"`
	Policies    int       `json:"policies"`
	Shadow      bool      `json:"applied_as_shadow,omitempty"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
	// Live and Candidate say whether the version is in force now, as the
	// live or the shadow set.
	Live      bool         `json:"live"`
	Candidate bool         `json:"shadow_candidate"`
	Files     []PolicyFile `json:"files,omitempty"`
}

// PolicyState says which versions are in force; 0 means none.
type PolicyState struct {
	Live   int64 `json:"live"`
	Shadow int64 `json:"shadow"`
}

// PolicyVersions lists versions with the state.
type PolicyVersions struct {
	State    PolicyState     `json:"state"`
	Versions []PolicyVersion `json:"versions"`
}

// PolicyRollbackRequest makes a stored version live.
type PolicyRollbackRequest struct {
	Version int64 `json:"version"`
}

// ShadowReport summarizes shadow evaluation of a version.
type ShadowReport struct {
	ShadowVersion int64 `json:"shadow_version"`
	// Evaluated counts real requests the shadow set was evaluated for.
	Evaluated int64 `json:"evaluated"`
	// Flipped counts requests the shadow set decided differently.
	Flipped     int64 `json:"flipped"`
	AllowToDeny int64 `json:"allow_to_deny"`
	DenyToAllow int64 `json:"deny_to_allow"`
	// Unrecorded counts differences found but not stored (overload).
	Unrecorded  int64              `json:"unrecorded"`
	Differences []ShadowDifference `json:"differences"`
}

// ShadowDifference is one request whose decision the shadow set flips.
type ShadowDifference struct {
	DecisionID    string    `json:"decision_id"`
	Time          time.Time `json:"time"`
	LiveVersion   int64     `json:"live_version"`
	Principal     string    `json:"principal"`
	Action        string    `json:"action"`
	Resource      string    `json:"resource"`
	Live          string    `json:"live"`   // allow or deny
	Shadow        string    `json:"shadow"` // allow or deny
	LiveReasons   []string  `json:"live_reasons,omitempty"`
	ShadowReasons []string  `json:"shadow_reasons,omitempty"`
}

// RoleAssignment is an agent's membership in a role.
type RoleAssignment struct {
	Agent     string    `json:"agent"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// ToolCatalog describes tool servers, their tools and HTTP routes.
type ToolCatalog struct {
	Servers []ToolServer `json:"servers"`
}

// ToolServer is a server of a ToolCatalog.
type ToolServer struct {
	Name            string      `json:"name"`
	Description     string      `json:"description,omitempty"`
	Sensitivity     string      `json:"sensitivity,omitempty"`
	UntrustedOutput *bool       `json:"untrusted_output,omitempty"`
	Groups          []string    `json:"groups,omitempty"`
	Tools           []ToolEntry `json:"tools,omitempty"`
	Routes          []ToolEntry `json:"routes,omitempty"`
	Hosts           []ToolEntry `json:"hosts,omitempty"`
}

// ToolEntry is a tool or route of a ToolServer.
type ToolEntry struct {
	Name            string   `json:"name"`
	Description     string   `json:"description,omitempty"`
	Sensitivity     string   `json:"sensitivity,omitempty"`
	UntrustedOutput *bool    `json:"untrusted_output,omitempty"`
	Groups          []string `json:"groups,omitempty"`
	Method          string   `json:"method,omitempty"`
	Path            string   `json:"path,omitempty"`
	// PathArgs are a tool's arguments that must be canonical paths.
	PathArgs []string `json:"path_args,omitempty"`
	// Effects is read or write (the default).
	Effects string `json:"effects,omitempty"`
}

// AuthZENEntity is an AuthZEN subject or resource. Type is a Cedar entity
// type (Agent, Tool, ...), ID its id.
type AuthZENEntity struct {
	Type       string          `json:"type"`
	ID         string          `json:"id"`
	Properties json.RawMessage `json:"properties,omitempty"`
}

// AuthZENAction is an AuthZEN action; Name is a Cedar action id
// (call_tool) or a full action reference (NS::Action::"x").
type AuthZENAction struct {
	Name       string          `json:"name"`
	Properties json.RawMessage `json:"properties,omitempty"`
}

// AuthZENRequest is an AuthZEN Access Evaluation request (and, with
// Evaluations, an Access Evaluations request whose top-level members are
// defaults for each item).
type AuthZENRequest struct {
	Subject     *AuthZENEntity   `json:"subject,omitempty"`
	Action      *AuthZENAction   `json:"action,omitempty"`
	Resource    *AuthZENEntity   `json:"resource,omitempty"`
	Context     json.RawMessage  `json:"context,omitempty"`
	Evaluations []AuthZENRequest `json:"evaluations,omitempty"`
	Options     *AuthZENOptions  `json:"options,omitempty"`
}

// AuthZENOptions are options of an Access Evaluations request.
type AuthZENOptions struct {
	// EvaluationsSemantic is execute_all (default), deny_on_first_deny or
	// permit_on_first_permit.
	EvaluationsSemantic string `json:"evaluations_semantic,omitempty"`
}

// AuthZENDecision is an AuthZEN decision.
type AuthZENDecision struct {
	Decision bool                    `json:"decision"`
	Context  *AuthZENDecisionContext `json:"context,omitempty"`
}

// AuthZENDecisionContext says how a decision was made.
type AuthZENDecisionContext struct {
	ID            string   `json:"id,omitempty"`
	PolicyVersion int64    `json:"policy_version"`
	Reasons       []string `json:"reasons,omitempty"`
	Errors        []string `json:"errors,omitempty"`
	// ReadOnly says the allowed resource is declared effects: read.
	ReadOnly bool `json:"read_only,omitempty"`
	// Sensitivity is the allowed resource's sensitivity in the catalog.
	Sensitivity string `json:"sensitivity,omitempty"`
	// Error is set when an item of a batch could not be evaluated.
	Error *AuthZENError `json:"error,omitempty"`
}

// AuthZENError is a per-item failure in an evaluations response.
type AuthZENError struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// AuthZENEvaluations is an Access Evaluations response.
type AuthZENEvaluations struct {
	Evaluations []AuthZENDecision `json:"evaluations"`
}

// PolicyExplainRequest asks how a request would be decided. Version 0 is
// the live version; Shadow selects the shadow version.
type PolicyExplainRequest struct {
	Subject  AuthZENEntity   `json:"subject"`
	Action   AuthZENAction   `json:"action"`
	Resource AuthZENEntity   `json:"resource"`
	Context  json.RawMessage `json:"context,omitempty"`
	Version  int64           `json:"version,omitempty"`
	Shadow   bool            `json:"shadow,omitempty"`
}

// PolicyExplanation is a decision with the policies that made it.
type PolicyExplanation struct {
	DecisionID  string         `json:"decision_id"`
	Decision    string         `json:"decision"` // allow or deny
	Version     int64          `json:"policy_version"`
	Principal   string         `json:"principal"`
	Action      string         `json:"action"`
	Resource    string         `json:"resource"`
	Context     string         `json:"context"`
	Considered  int            `json:"considered"`
	Total       int            `json:"total"`
	Determining []PolicyDetail `json:"determining"`
	Errors      []PolicyDetail `json:"errors"`
}

// PolicyDetail is one policy, located.
type PolicyDetail struct {
	ID       string `json:"id"`
	Effect   string `json:"effect"`
	Position string `json:"position"` // file:line:column
	Text     string `json:"text"`
	Error    string `json:"error,omitempty"`
}
