// Package audit is Bulkhead's single typed stream of security events.
//
// Every component that makes or enforces a security decision records it here
// before acting on it: certificate issuance and revocation, token issuance,
// policy changes, gateway decisions. A record is committed durably before the
// action it describes proceeds; if the record cannot be written, the action is
// refused (fail closed). Committed records are then published to subscribers,
// which is how gateways learn of revocations.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// ActorKind says what kind of identity caused an event. Agents and humans are
// kept distinct so that a record never leaves it ambiguous whether an action
// was an agent's or a person's.
type ActorKind string

// Actor kinds.
const (
	ActorAgent     ActorKind = "agent"     // an agent's SPIFFE ID
	ActorOperator  ActorKind = "operator"  // a human operator's SPIFFE ID
	ActorWorkload  ActorKind = "workload"  // a Bulkhead component, e.g. a gateway
	ActorSystem    ActorKind = "system"    // the control plane itself (timers, start-up)
	ActorAnonymous ActorKind = "anonymous" // an unauthenticated caller, e.g. an enrolling agent
)

// Actor is who caused an event.
type Actor struct {
	Kind ActorKind `json:"kind"`
	ID   string    `json:"id,omitempty"`
}

// String renders the actor as kind:id.
func (a Actor) String() string {
	if a.ID == "" {
		return string(a.Kind)
	}
	return string(a.Kind) + ":" + a.ID
}

// Decision is the outcome an event records.
type Decision string

// Decisions.
const (
	Allow Decision = "allow"
	Deny  Decision = "deny"
	// Failed records that an action allowed by an earlier record did not
	// complete, so the log never claims an effect that did not happen.
	Failed Decision = "failed"
)

// Actions recorded by the identity lifecycle. Later components add their own;
// an action is a dotted noun.verb.
const (
	ActionAgentCreate     = "agent.create"
	ActionAgentDisable    = "agent.disable"
	ActionAgentEnable     = "agent.enable"
	ActionAgentRevoke     = "agent.revoke"
	ActionJoinTokenCreate = "jointoken.create"
	ActionSVIDIssue       = "svid.issue"
	ActionSVIDRenew       = "svid.renew"
	ActionSVIDRevoke      = "svid.revoke"
	ActionOperatorIssue   = "operator.issue"
	ActionServerStart     = "server.start"
	// ActionAPIAccess records a refused API call by an authenticated caller.
	ActionAPIAccess = "api.access"
	// ActionAuditPrune records that an operator deleted archived event
	// bodies below Detail["before"]; the log's hashes stay.
	ActionAuditPrune = "audit.prune"
)

// Event is one security event. Secrets never enter an event: request data is
// recorded as a digest (see Digest).
type Event struct {
	// Seq is the event's index in the log, assigned when it is committed.
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Actor is who asked.
	Actor  Actor  `json:"actor"`
	Action string `json:"action"`
	// Target is what the action was applied to, usually a SPIFFE ID.
	Target   string   `json:"target,omitempty"`
	Decision Decision `json:"decision"`
	Reasons  []string `json:"reasons,omitempty"`
	Task     string   `json:"task,omitempty"`
	// Digests maps a name ("csr", "arguments") to Digest of that data.
	Digests map[string]string `json:"digests,omitempty"`
	// Detail holds non-secret facts such as a certificate serial or expiry.
	Detail map[string]string `json:"detail,omitempty"`
}

// Validate reports whether the event has the fields every record needs.
func (e *Event) Validate() error {
	switch {
	case e.Time.IsZero():
		return fmt.Errorf("audit: event %q has no time", e.Action)
	case e.Action == "":
		return fmt.Errorf("audit: event has no action")
	case e.Actor.Kind == "":
		return fmt.Errorf("audit: event %q has no actor", e.Action)
	case e.Decision == "":
		return fmt.Errorf("audit: event %q has no decision", e.Action)
	}
	return nil
}

// Encode returns the event's canonical bytes: the record that is stored and,
// later, hashed into the log. encoding/json sorts map keys, so the encoding of
// an event is deterministic.
func (e *Event) Encode() ([]byte, error) {
	c := *e
	c.Time = c.Time.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("audit: encode event: %w", err)
	}
	return b, nil
}

// Decode parses an encoded event.
func Decode(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("audit: decode event: %w", err)
	}
	return e, nil
}

// Digest returns "sha256:<hex>" of data, the form in which request data
// appears in events.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
