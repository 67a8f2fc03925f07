package api

import "time"

// ManifestApplyRequest applies a task manifest (its YAML source).
type ManifestApplyRequest struct {
	Source string `json:"source"`
}

// Manifest is a stored version of a task manifest.
type Manifest struct {
	Name        string `json:"name"`
	Version     int64  `json:"version"`
	Description string `json:"description,omitempty"`
	// Digest identifies the compiled policies.
	Digest      string            `json:"digest"`
	Agents      []string          `json:"agents,omitempty"`
	MaxDuration string            `json:"max_duration"`
	Approved    []ManifestRule    `json:"approved_actions"`
	Prohibited  []ManifestRule    `json:"prohibited_actions"`
	Triggers    []ManifestTrigger `json:"escalation_triggers"`
	Limits      TaskLimits        `json:"scope_limits"`
	// Source is the YAML as applied; Policies the Cedar compiled from it
	// (both only when one manifest is shown).
	Source    string    `json:"source,omitempty"`
	Policies  string    `json:"policies,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// ManifestRule is actions on resources, with an optional Cedar condition.
type ManifestRule struct {
	Actions   []string `json:"actions"`
	Resources []string `json:"resources,omitempty"`
	When      string   `json:"when,omitempty"`
}

// ManifestTrigger is an elevation a task may ask for.
type ManifestTrigger struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Grants      []ManifestRule `json:"grants"`
	MaxDuration string         `json:"max_duration"`
	MaxUses     int64          `json:"max_uses"`
	Approval    string         `json:"approval"`
	Sensitivity string         `json:"sensitivity"`
}

// TaskLimits are a task's budgets at each gateway (0: none).
type TaskLimits struct {
	Calls         int64 `json:"calls,omitempty"`
	ResponseBytes int64 `json:"response_bytes,omitempty"`
}

// TaskStartRequest opens a task of a manifest.
type TaskStartRequest struct {
	Manifest    string `json:"manifest"`
	Description string `json:"description,omitempty"`
}

// TaskEndRequest completes or cancels a task.
type TaskEndRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Task is an agent's task.
type Task struct {
	ID              string    `json:"id"`
	Agent           string    `json:"agent"`
	Manifest        string    `json:"manifest"`
	ManifestVersion int64     `json:"manifest_version"`
	Description     string    `json:"description,omitempty"`
	Status          string    `json:"status"`
	Open            bool      `json:"open"`
	Tainted         bool      `json:"tainted"`
	TaintedAt       time.Time `json:"tainted_at,omitzero"`
	TaintSource     string    `json:"taint_source,omitempty"`
	OpenedAt        time.Time `json:"opened_at"`
	Deadline        time.Time `json:"deadline"`
	EndedAt         time.Time `json:"ended_at,omitzero"`
	EndedBy         string    `json:"ended_by,omitempty"`
	EndReason       string    `json:"end_reason,omitempty"`
}

// TaskState is a task's live state as a gateway needs it.
type TaskState struct {
	Task    Task         `json:"task"`
	Open    bool         `json:"open"`
	Limits  TaskLimits   `json:"limits"`
	Grants  []GrantState `json:"grants"`
	Checked time.Time    `json:"checked"`
}

// GrantState is a grant in force.
type GrantState struct {
	// Elevation is the elevation's id, which a use names.
	Elevation string `json:"elevation"`
	// Name is the grant's name in context.grants ("MANIFEST/TRIGGER").
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxUses   int64     `json:"max_uses"`
	Uses      int64     `json:"uses"`
}

// TaskOutputRequest is a gateway's report that a task received output
// from a resource (a Cedar entity, e.g. Tool::"files/read_file").
type TaskOutputRequest struct {
	Agent    string `json:"agent"`
	Resource string `json:"resource"`
	// Suspect, if set, says why the resource's output is untrusted
	// whatever the catalog says (its sandbox refused a system call).
	Suspect string `json:"suspect,omitempty"`
}

// TaskOutputResult says whether the resource's output is untrusted and
// whether the task is tainted now.
type TaskOutputResult struct {
	Untrusted bool `json:"untrusted"`
	Tainted   bool `json:"tainted"`
}

// ElevationRequest asks for a trigger of the caller's task.
type ElevationRequest struct {
	Task          string `json:"task"`
	Trigger       string `json:"trigger"`
	Justification string `json:"justification"`
}

// Elevation is an elevation request and, once approved, its grant, with
// the provenance an approver weighs.
type Elevation struct {
	ID               string    `json:"id"`
	Task             string    `json:"task"`
	Agent            string    `json:"agent"`
	Manifest         string    `json:"manifest"`
	Trigger          string    `json:"trigger"`
	Justification    string    `json:"justification"`
	Approval         string    `json:"approval"`
	Sensitivity      string    `json:"sensitivity"`
	Tainted          bool      `json:"tainted_at_request"`
	Status           string    `json:"status"`
	RequestedAt      time.Time `json:"requested_at"`
	RequestExpiresAt time.Time `json:"request_expires_at"`
	GrantedAt        time.Time `json:"granted_at,omitzero"`
	ExpiresAt        time.Time `json:"expires_at,omitzero"`
	MaxUses          int64     `json:"max_uses"`
	Uses             int64     `json:"uses"`
	EndedAt          time.Time `json:"ended_at,omitzero"`
	EndedBy          string    `json:"ended_by,omitempty"`
	EndReason        string    `json:"end_reason,omitempty"`
	// InForce says the grant works now.
	InForce   bool                `json:"in_force"`
	Approvals []ElevationApproval `json:"approvals"`
	// Provenance, when one elevation is shown: the task now and what the
	// trigger grants.
	TaskNow *Task            `json:"task_now,omitempty"`
	Grants  *ManifestTrigger `json:"grants,omitempty"`
}

// ElevationApproval is one approver's consent.
type ElevationApproval struct {
	Approver string    `json:"approver"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// ElevationDecision approves or denies an elevation. It is bound to the
// request and its task, as the approver saw them: sent for another
// request or task, it is refused.
type ElevationDecision struct {
	Elevation string `json:"elevation"`
	Task      string `json:"task"`
	Reason    string `json:"reason"`
}

// ElevationUse is a gateway's use of a grant for one call.
type ElevationUse struct {
	Task       string `json:"task"`
	Agent      string `json:"agent"`
	Resource   string `json:"resource"`
	DecisionID string `json:"decision_id,omitempty"`
}

// Standing measures standing privilege.
type Standing struct {
	// Standing counts grants in force outside an open task: always 0.
	Standing  int64 `json:"standing"`
	Active    int64 `json:"active"`
	Pending   int64 `json:"pending"`
	OpenTasks int64 `json:"open_tasks"`
}

// ApprovalPolicy is the approval policy set in force.
type ApprovalPolicy struct {
	Version int64        `json:"version"`
	Digest  string       `json:"digest"`
	Files   []PolicyFile `json:"files"`
	// Schema is the fixed approval schema the files are validated
	// against.
	Schema    string    `json:"schema,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// ApprovalPolicyApplyRequest replaces the approval policy set.
type ApprovalPolicyApplyRequest struct {
	Files []PolicyFile `json:"files"`
}
