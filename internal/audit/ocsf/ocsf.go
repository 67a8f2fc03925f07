// Package ocsf maps Bulkhead audit events to the Open Cybersecurity Schema
// Framework (OCSF 1.7.0), the shape SIEMs ingest. docs/audit.md documents
// the mapping; this file is its implementation.
//
// Each action maps to the OCSF class that describes it (Account Change for
// an agent's lifecycle, Authentication for credentials, Entity Management
// for objects an operator manages, API Activity for authorization decisions
// on calls, Application Lifecycle for the control plane itself). Whatever
// has no OCSF attribute goes to "unmapped", so nothing is lost.
package ocsf

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// Version is the OCSF schema version the events follow.
const Version = "1.7.0"

// Classes and categories used.
const (
	categoryFindings = 2 // Findings
	categoryIAM      = 3 // Identity & Access Management
	categoryApp      = 6 // Application Activity

	ClassDetectionFinding = 2004

	ClassAccountChange        = 3001
	ClassAuthentication       = 3002
	ClassEntityManagement     = 3004
	ClassApplicationLifecycle = 6002
	ClassAPIActivity          = 6003
)

var classNames = map[int]string{
	ClassDetectionFinding: "Detection Finding",
	ClassAccountChange:    "Account Change", ClassAuthentication: "Authentication",
	ClassEntityManagement: "Entity Management", ClassApplicationLifecycle: "Application Lifecycle",
	ClassAPIActivity: "API Activity",
}

// Event is an OCSF event. Only the attributes Bulkhead fills are declared.
type Event struct {
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	TypeUID      int    `json:"type_uid"`
	Time         int64  `json:"time"` // milliseconds since the epoch
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity"`
	StatusID     int    `json:"status_id"`
	Status       string `json:"status"`
	StatusDetail string `json:"status_detail,omitempty"`
	ActionID     int    `json:"action_id"`
	Action       string `json:"action"`
	Message      string `json:"message"`

	Metadata       Metadata        `json:"metadata"`
	Actor          Actor           `json:"actor"`
	User           *User           `json:"user,omitempty"`   // Account Change, Authentication
	Entity         *Entity         `json:"entity,omitempty"` // Entity Management
	API            *API            `json:"api,omitempty"`    // API Activity
	App            *Product        `json:"app,omitempty"`    // Application Lifecycle
	Resources      []Resource      `json:"resources,omitempty"`
	Authorizations []Authorization `json:"authorizations,omitempty"`
	// Detection Finding: what was found, and the risk it carries.
	FindingInfo *FindingInfo   `json:"finding_info,omitempty"`
	RiskScore   *int           `json:"risk_score,omitempty"`
	RiskLevel   string         `json:"risk_level,omitempty"`
	RiskLevelID *int           `json:"risk_level_id,omitempty"`
	Unmapped    map[string]any `json:"unmapped,omitempty"`
}

// FindingInfo describes a finding.
type FindingInfo struct {
	UID   string   `json:"uid"`
	Title string   `json:"title"`
	Desc  string   `json:"desc,omitempty"`
	Types []string `json:"types,omitempty"`
}

// Metadata is OCSF metadata.
type Metadata struct {
	Version   string  `json:"version"`
	Product   Product `json:"product"`
	UID       string  `json:"uid"`
	Sequence  int64   `json:"sequence"`
	LogName   string  `json:"log_name"`
	EventCode string  `json:"event_code"`
}

// Product names Bulkhead.
type Product struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
}

// Actor is who caused the event.
type Actor struct {
	User *User `json:"user,omitempty"`
}

// User is an OCSF user: here a SPIFFE identity.
type User struct {
	UID    string `json:"uid,omitempty"`
	Name   string `json:"name,omitempty"`
	Type   string `json:"type,omitempty"`
	TypeID int    `json:"type_id"`
}

// Entity is a managed entity.
type Entity struct {
	UID    string `json:"uid,omitempty"`
	Name   string `json:"name,omitempty"`
	Type   string `json:"type"`
	TypeID int    `json:"type_id"`
}

// API describes the operation of an API Activity.
type API struct {
	Operation string `json:"operation"`
}

// Resource is a resource an API call touched.
type Resource struct {
	UID  string `json:"uid,omitempty"`
	Type string `json:"type,omitempty"`
}

// Authorization is a decision and the policy that made it.
type Authorization struct {
	Decision string  `json:"decision"`
	Policy   *Policy `json:"policy,omitempty"`
}

// Policy names a policy.
type Policy struct {
	UID string `json:"uid,omitempty"`
}

// User type ids (OCSF user.type_id). Agents are neither people nor the
// system, so they are "Other" with type "Agent"; the kinds stay distinct.
const (
	userUnknown = 0
	userUser    = 1
	userSystem  = 3
	userOther   = 99
)

// Mapper turns audit events into OCSF events.
type Mapper struct {
	// LogName is the log's origin, used in metadata and event uids.
	LogName string
	// ProductVersion is Bulkhead's version.
	ProductVersion string
}

// Map returns the OCSF event for ev.
func (m Mapper) Map(ev audit.Event) Event {
	class, activity, activityName := classify(ev.Action)
	out := Event{
		ClassUID: class, ClassName: classNames[class], ActivityID: activity, ActivityName: activityName,
		TypeUID: class*100 + activity, Time: ev.Time.UnixMilli(),
		Message: message(ev),
		Metadata: Metadata{Version: Version, Product: m.product(), UID: m.LogName + "/" + strconv.FormatInt(ev.Seq, 10),
			Sequence: ev.Seq, LogName: m.LogName, EventCode: ev.Action},
		Actor: Actor{User: user(ev.Actor.ID, ev.Actor.Kind)},
	}
	out.CategoryUID, out.CategoryName = categoryIAM, "Identity & Access Management"
	switch {
	case class >= 6000:
		out.CategoryUID, out.CategoryName = categoryApp, "Application Activity"
	case class < 3000:
		out.CategoryUID, out.CategoryName = categoryFindings, "Findings"
	}
	switch ev.Decision {
	case audit.Allow:
		out.StatusID, out.Status, out.ActionID, out.Action, out.SeverityID, out.Severity = 1, "Success", 1, "Allowed", 1, "Informational"
	case audit.Deny:
		// A refusal of a known identity is worth a look.
		out.StatusID, out.Status, out.ActionID, out.Action, out.SeverityID, out.Severity = 2, "Failure", 2, "Denied", 3, "Medium"
	default: // failed: allowed, but the action did not complete
		out.StatusID, out.Status, out.ActionID, out.Action, out.SeverityID, out.Severity = 2, "Failure", 1, "Allowed", 2, "Low"
	}
	out.StatusDetail = strings.Join(ev.Reasons, "; ")
	switch class {
	case ClassAccountChange, ClassAuthentication:
		// The account acted on: the target when it is an identity, else
		// (a gateway authenticating a request) the caller itself.
		if k := kindOf(ev.Target); k != "" {
			out.User = user(ev.Target, k)
		} else {
			out.User = user(ev.Actor.ID, ev.Actor.Kind)
		}
	case ClassEntityManagement:
		out.Entity = entity(ev)
	case ClassApplicationLifecycle:
		p := m.product()
		out.App = &p
	case ClassDetectionFinding:
		finding(&out, ev)
	case ClassAPIActivity:
		op := ev.Action
		if ev.Action == audit.ActionAPIAccess {
			op = ev.Target // "METHOD /path"
		}
		out.API = &API{Operation: op}
		if ev.Target != "" && ev.Action != audit.ActionAPIAccess {
			out.Resources = []Resource{{UID: ev.Target}}
		}
	}
	if ev.Decision == audit.Allow || ev.Decision == audit.Deny {
		a := Authorization{Decision: string(ev.Decision)}
		if p := ev.Detail["policy"]; p != "" {
			a.Policy = &Policy{UID: p}
		}
		out.Authorizations = []Authorization{a}
	}
	un := map[string]any{"bulkhead_decision": string(ev.Decision)}
	if ev.Target != "" {
		un["target"] = ev.Target
	}
	if ev.Task != "" {
		un["task"] = ev.Task
	}
	if len(ev.Reasons) > 0 {
		un["reasons"] = ev.Reasons
	}
	if len(ev.Digests) > 0 {
		un["digests"] = ev.Digests
	}
	if len(ev.Detail) > 0 {
		un["detail"] = ev.Detail
	}
	out.Unmapped = un
	return out
}

func (m Mapper) product() Product {
	return Product{Name: "Bulkhead", VendorName: "Bulkhead", Version: m.ProductVersion}
}

// classify returns the class, activity id and activity name of an action.
// Actions of components that do not exist yet fall to their noun's class,
// and anything unknown to API Activity "Other", which keeps the action name.
func classify(action string) (int, int, string) {
	switch action {
	case audit.ActionAgentCreate:
		return ClassAccountChange, 1, "Create"
	case audit.ActionAgentEnable:
		return ClassAccountChange, 2, "Enable"
	case audit.ActionAgentDisable:
		return ClassAccountChange, 5, "Disable"
	case audit.ActionAgentRevoke:
		// Revoking an agent blocks it until it is enabled again: a lock.
		return ClassAccountChange, 9, "Lock"
	case audit.ActionSVIDIssue, audit.ActionOperatorIssue:
		// An X.509-SVID is the credential later requests authenticate
		// with: the counterpart of an authentication ticket.
		return ClassAuthentication, 3, "Authentication Ticket"
	case audit.ActionSVIDRenew:
		return ClassAuthentication, 99, "Renew"
	case audit.ActionSVIDRevoke:
		return ClassEntityManagement, 99, "Revoke"
	case audit.ActionJoinTokenCreate:
		return ClassEntityManagement, 1, "Create"
	case audit.ActionServerStart:
		return ClassApplicationLifecycle, 3, "Start"
	case audit.ActionAuditPrune:
		return ClassEntityManagement, 4, "Delete"
	case audit.ActionAPIAccess:
		return ClassAPIActivity, 99, "Other"
	}
	noun, verb, _ := strings.Cut(action, ".")
	switch noun {
	case "agent":
		if verb == "revoke_subtree" {
			return ClassAccountChange, 9, "Lock"
		}
		return ClassAccountChange, 99, verb // scopes, delegate, ...
	case "role":
		// A role grants permissions the way an attached policy does.
		if verb == "remove" {
			return ClassAccountChange, 8, "Detach Policy"
		}
		return ClassAccountChange, 7, "Attach Policy"
	case "token":
		switch verb {
		case "issue", "exchange":
			// An access token for one audience: a service ticket.
			return ClassAuthentication, 4, "Service Ticket Request"
		case "revoke":
			return ClassEntityManagement, 99, "Revoke"
		}
	case "gateway":
		switch verb {
		case "anomaly":
			return ClassDetectionFinding, 1, "Create"
		case "authenticate":
			return ClassAuthentication, 1, "Logon"
		case "read_resource":
			return ClassAPIActivity, 2, "Read"
		}
		return ClassAPIActivity, 99, "Other" // call_tool, list_tools, ...
	case "policy", "tool", "resource", "secret":
		switch verb {
		case "add":
			return ClassEntityManagement, 1, "Create"
		case "remove", "delete":
			return ClassEntityManagement, 4, "Delete"
		case "reveal":
			return ClassEntityManagement, 2, "Read"
		}
		return ClassEntityManagement, 3, "Update" // apply, rollback, set, ...
	}
	return ClassAPIActivity, 99, "Other" // pdp.decision and anything new
}

// finding fills a Detection Finding from an anomaly record: its risk
// (0–100, as OCSF risk_score) and level, and its reasons as the finding's
// types.
func finding(out *Event, ev audit.Event) {
	score, _ := strconv.Atoi(ev.Detail["risk"])
	level, name := 1, "Low"
	switch {
	case score >= 90:
		level, name = 4, "Critical"
	case score >= 75:
		level, name = 3, "High"
	case score >= 50:
		level, name = 2, "Medium"
	}
	out.RiskScore, out.RiskLevel, out.RiskLevelID = &score, name, &level
	// Severity follows the risk, whatever the call's own decision was.
	out.SeverityID, out.Severity = level+1, name
	out.FindingInfo = &FindingInfo{UID: out.Metadata.UID, Title: "Anomalous agent behaviour: " + ev.Target,
		Desc: strings.Join(ev.Reasons, "; "), Types: strings.Fields(ev.Detail["risk_reasons"])}
	out.Resources = []Resource{{UID: ev.Target}}
}

// entityTypes names what an Entity Management event manages, by noun.
var entityTypes = map[string]string{
	"jointoken": "Join Token", "svid": "X.509-SVID", "token": "Access Token", "policy": "Policy", "audit": "Audit Log",
	"tool": "Tool Catalog", "resource": "Resource Server", "secret": "Secret",
}

func entity(ev audit.Event) *Entity {
	noun, _, _ := strings.Cut(ev.Action, ".")
	e := &Entity{UID: ev.Target, Type: entityTypes[noun], TypeID: 99}
	if e.Type == "" {
		e.Type = noun
	}
	if s := ev.Detail["serial"]; s != "" && noun == "svid" {
		e.Name = s
	}
	return e
}

func user(id string, kind audit.ActorKind) *User {
	if id == "" && kind == "" {
		return nil
	}
	u := &User{UID: id, Name: nameOf(id)}
	switch kind {
	case audit.ActorOperator:
		u.Type, u.TypeID = "User", userUser
	case audit.ActorSystem, audit.ActorWorkload:
		u.Type, u.TypeID = "System", userSystem
	case audit.ActorAgent:
		u.Type, u.TypeID = "Agent", userOther
	default:
		u.Type, u.TypeID = "Unknown", userUnknown
	}
	return u
}

// kindOf classifies a target SPIFFE ID by Bulkhead's path conventions.
func kindOf(id string) audit.ActorKind {
	_, path, _ := strings.Cut(strings.TrimPrefix(id, "spiffe://"), "/")
	switch {
	case strings.HasPrefix(path, "agent/"):
		return audit.ActorAgent
	case strings.HasPrefix(path, "operator/"):
		return audit.ActorOperator
	case strings.HasPrefix(path, "bulkhead/"):
		return audit.ActorWorkload
	}
	return ""
}

// nameOf is the last path segment of a SPIFFE ID: the agent's or
// operator's name.
func nameOf(id string) string {
	if !strings.HasPrefix(id, "spiffe://") {
		return id
	}
	if i := strings.LastIndexByte(id, '/'); i >= 0 && i < len(id)-1 {
		return id[i+1:]
	}
	return id
}

func message(ev audit.Event) string {
	var b strings.Builder
	b.WriteString(ev.Actor.String())
	b.WriteString(" ")
	b.WriteString(ev.Action)
	if ev.Target != "" {
		b.WriteString(" ")
		b.WriteString(ev.Target)
	}
	b.WriteString(": ")
	b.WriteString(string(ev.Decision))
	return b.String()
}

// Format is a line format for exports and sinks.
type Format string

// Formats.
const (
	FormatJSON Format = "json" // the audit event as stored, one JSON object per line
	FormatOCSF Format = "ocsf" // the OCSF event, one JSON object per line
)

// ParseFormat checks a format name.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatJSON, FormatOCSF:
		return f, nil
	}
	return "", fmt.Errorf("ocsf: format must be json or ocsf, not %q", s)
}

// Line returns ev as one line (without the newline) in format f.
func (m Mapper) Line(f Format, ev audit.Event) ([]byte, error) {
	var v any = ev
	if f == FormatOCSF {
		v = m.Map(ev)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("ocsf: encode event %d: %w", ev.Seq, err)
	}
	return b, nil
}
