package elevation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"go.yaml.in/yaml/v3"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Manifest declares one kind of task: the four items of a blast-radius
// assessment. Operators write it in YAML and apply it with
// 'bulkhead manifest apply -f FILE'.
type Manifest struct {
	// Name identifies the manifest; agents open tasks against it.
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Agents are SPIFFE ID patterns of the agents that may open tasks of
	// this kind (a trailing "*" matches any rest); empty means any agent.
	Agents []string `yaml:"agents,omitempty" json:"agents,omitempty"`
	// MaxDuration bounds a task: it times out, and returns to baseline,
	// this long after it opened. Default DefaultTaskDuration.
	MaxDuration Duration `yaml:"max_duration,omitempty" json:"max_duration,omitempty"`
	// ApprovedActions are the task's baseline: inside the task the agent
	// may do only these (as far as its roles allow) and what a grant adds.
	ApprovedActions []Rule `yaml:"approved_actions" json:"approved_actions"`
	// ProhibitedActions are never allowed in the task, whatever its roles
	// or grants say (compiled to forbid policies).
	ProhibitedActions []Rule `yaml:"prohibited_actions,omitempty" json:"prohibited_actions,omitempty"`
	// EscalationTriggers are the elevations the task may ask for.
	EscalationTriggers []Trigger `yaml:"escalation_triggers,omitempty" json:"escalation_triggers,omitempty"`
	// ScopeLimits are the task's budgets at each gateway.
	ScopeLimits Limits `yaml:"scope_limits,omitempty" json:"scope_limits,omitzero"`
}

// Rule names actions on resources, optionally with a Cedar condition.
type Rule struct {
	// Actions are Bulkhead's actions (call_tool, list_tools,
	// read_resource, get_prompt, the HTTP methods) or their groups (read,
	// write, mcp, http).
	Actions []string `yaml:"actions" json:"actions"`
	// Resources are "SERVER" (a server and everything on it),
	// "SERVER/NAME" (a tool, or a route for HTTP actions), or a Cedar
	// entity such as ToolGroup::"docs". Empty means any resource.
	Resources []string `yaml:"resources,omitempty" json:"resources,omitempty"`
	// When is a Cedar condition on the request, e.g.
	//   context.input has path && context.input.path like "/reports/*"
	When string `yaml:"when,omitempty" json:"when,omitempty"`
}

// Trigger is an elevation a task may request: what it grants, for how
// long and how many uses, and who must approve it.
type Trigger struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Grants are the actions the elevation adds while in force.
	Grants []Rule `yaml:"grants" json:"grants"`
	// MaxDuration bounds the grant (and the task's end bounds it too).
	// Default DefaultGrantDuration.
	MaxDuration Duration `yaml:"max_duration,omitempty" json:"max_duration,omitempty"`
	// MaxUses is how many calls the grant allows (JIT/JEA); 0 means any
	// number until it expires.
	MaxUses int64 `yaml:"max_uses,omitempty" json:"max_uses,omitempty"`
	// Approval is who must approve: policy (the approval policy set may
	// approve it alone), human (one operator) or two_humans (two distinct
	// operators). Default human.
	Approval string `yaml:"approval,omitempty" json:"approval"`
	// Sensitivity (low, medium, high) is what the approval policy reads.
	// Default medium.
	Sensitivity string `yaml:"sensitivity,omitempty" json:"sensitivity"`
}

// Limits are a task's budgets, counted per task at each gateway and reset
// when the task ends; zero means no limit.
type Limits struct {
	Calls         int64 `yaml:"calls,omitempty" json:"calls,omitempty"`
	ResponseBytes int64 `yaml:"response_bytes,omitempty" json:"response_bytes,omitempty"`
}

// Approval modes of a trigger.
const (
	ApprovalPolicy    = "policy"
	ApprovalHuman     = "human"
	ApprovalTwoHumans = "two_humans"
)

// Defaults and bounds.
const (
	DefaultTaskDuration  = time.Hour
	MaxTaskDuration      = 7 * 24 * time.Hour
	DefaultGrantDuration = 15 * time.Minute
	MinDuration          = time.Minute
	// MaxManifestBytes bounds a manifest file.
	MaxManifestBytes = 64 << 10
	maxRules         = 64
	maxTriggers      = 32
	maxResources     = 64
	maxWhen          = 4096
	maxText          = 1024
)

// Duration is a time.Duration written as "15m" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 15m or 2h", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalText writes the duration string (JSON).
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads a duration string (JSON).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// nameRE is the alphabet of manifest and trigger names: they appear in
// policy ids ("manifest:NAME:trigger:T") and grant names ("NAME/T"), so
// neither ':' nor '/' may occur.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName checks a manifest or trigger name; what says which.
func ValidateName(what, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s name %q must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", fault.Invalid, what, name)
	}
	return nil
}

// ParseManifest decodes a manifest (YAML; unknown keys are errors),
// validates it and fills defaults.
func ParseManifest(b []byte) (Manifest, error) {
	if len(b) > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("%w: manifest is over %d bytes", fault.Invalid, MaxManifestBytes)
	}
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return Manifest{}, fmt.Errorf("%w: manifest is empty", fault.Invalid)
		}
		return Manifest{}, fmt.Errorf("%w: manifest: %w", fault.Invalid, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Manifest{}, fmt.Errorf("%w: a manifest file holds one document", fault.Invalid)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Validate checks the manifest and fills defaults. Errors wrap
// fault.Invalid and say where the problem is.
func (m *Manifest) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: manifest %s: "+format, append([]any{fault.Invalid, m.Name}, args...)...))
	}
	if err := ValidateName("manifest", m.Name); err != nil {
		return err
	}
	if len(m.Description) > maxText {
		bad("description is over %d bytes", maxText)
	}
	for _, p := range m.Agents {
		if !strings.HasPrefix(p, "spiffe://") {
			bad("agent pattern %q is not a SPIFFE ID pattern", p)
		} else if _, err := path.Match(strings.TrimSuffix(p, "*"), ""); err != nil {
			bad("agent pattern %q: %v", p, err)
		}
	}
	if m.MaxDuration == 0 {
		m.MaxDuration = Duration(DefaultTaskDuration)
	}
	if d := time.Duration(m.MaxDuration); d < MinDuration || d > MaxTaskDuration {
		bad("max_duration %s is outside [%s, %s]", d, MinDuration, MaxTaskDuration)
	}
	checkRules := func(what string, rules []Rule, needOne bool) {
		if needOne && len(rules) == 0 {
			bad("%s: at least one rule is needed", what)
		}
		if len(rules) > maxRules {
			bad("%s: at most %d rules", what, maxRules)
		}
		for i := range rules {
			if err := rules[i].check(); err != nil {
				bad("%s[%d]: %v", what, i, err)
			}
		}
	}
	checkRules("approved_actions", m.ApprovedActions, false)
	checkRules("prohibited_actions", m.ProhibitedActions, false)
	if len(m.EscalationTriggers) > maxTriggers {
		bad("at most %d escalation triggers", maxTriggers)
	}
	seen := map[string]bool{}
	for i := range m.EscalationTriggers {
		t := &m.EscalationTriggers[i]
		if err := ValidateName("trigger", t.Name); err != nil {
			bad("escalation_triggers[%d]: %v", i, err)
			continue
		}
		if seen[t.Name] {
			bad("trigger %q appears twice", t.Name)
		}
		seen[t.Name] = true
		if len(t.Description) > maxText {
			bad("trigger %s: description is over %d bytes", t.Name, maxText)
		}
		checkRules("trigger "+t.Name+" grants", t.Grants, true)
		if t.MaxDuration == 0 {
			t.MaxDuration = Duration(min(DefaultGrantDuration, time.Duration(m.MaxDuration)))
		}
		if d := time.Duration(t.MaxDuration); d < MinDuration || d > time.Duration(m.MaxDuration) {
			bad("trigger %s: max_duration %s is outside [%s, the task's %s]", t.Name, d, MinDuration, time.Duration(m.MaxDuration))
		}
		if t.MaxUses < 0 {
			bad("trigger %s: max_uses must not be negative", t.Name)
		}
		if t.Approval == "" {
			t.Approval = ApprovalHuman
		}
		if !slices.Contains([]string{ApprovalPolicy, ApprovalHuman, ApprovalTwoHumans}, t.Approval) {
			bad("trigger %s: approval %q must be policy, human or two_humans", t.Name, t.Approval)
		}
		if t.Sensitivity == "" {
			t.Sensitivity = policy.SensitivityMedium
		}
		if !slices.Contains([]string{policy.SensitivityLow, policy.SensitivityMedium, policy.SensitivityHigh}, t.Sensitivity) {
			bad("trigger %s: sensitivity %q must be low, medium or high", t.Name, t.Sensitivity)
		}
	}
	if m.ScopeLimits.Calls < 0 || m.ScopeLimits.ResponseBytes < 0 {
		bad("scope_limits must not be negative")
	}
	return errors.Join(errs...)
}

// Trigger returns the named trigger.
func (m Manifest) Trigger(name string) (Trigger, bool) {
	for _, t := range m.EscalationTriggers {
		if t.Name == name {
			return t, true
		}
	}
	return Trigger{}, false
}

// AllowsAgent reports whether agent (a SPIFFE ID) may open tasks of m.
func (m Manifest) AllowsAgent(agent string) bool {
	if len(m.Agents) == 0 {
		return true
	}
	for _, p := range m.Agents {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && !strings.Contains(prefix, "*") {
			if strings.HasPrefix(agent, prefix) && len(agent) > len(prefix) {
				return true
			}
			continue
		}
		if ok, _ := path.Match(p, agent); ok {
			return true
		}
	}
	return false
}

// resourceKind is the resource type an action applies to.
var resourceKind = map[string]cedar.EntityType{
	policy.ActionCallTool: policy.TypeTool, policy.ActionListTools: policy.TypeToolServer,
	policy.ActionReadResource: policy.TypeToolServer, policy.ActionGetPrompt: policy.TypeToolServer,
	"GET": policy.TypeRoute, "HEAD": policy.TypeRoute, "OPTIONS": policy.TypeRoute, "POST": policy.TypeRoute,
	"PUT": policy.TypeRoute, "PATCH": policy.TypeRoute, "DELETE": policy.TypeRoute,
	// Groups: write and http hold only routes; read and mcp mix kinds.
	"write": policy.TypeRoute, "http": policy.TypeRoute, "read": "", "mcp": "",
}

// entityTypes are the resource types a manifest may name.
var entityTypes = []cedar.EntityType{policy.TypeTool, policy.TypeRoute, policy.TypeToolServer, policy.TypeToolGroup}

// check validates a rule and resolves its resources to Cedar entities.
func (r *Rule) check() error {
	if len(r.Actions) == 0 {
		return errors.New("actions is required")
	}
	kind := cedar.EntityType("?")
	for _, a := range r.Actions {
		k, ok := resourceKind[a]
		if !ok {
			return fmt.Errorf("unknown action %q", a)
		}
		switch {
		case kind == "?":
			kind = k
		case kind != k:
			kind = ""
		}
	}
	if len(r.Resources) > maxResources {
		return fmt.Errorf("at most %d resources", maxResources)
	}
	for _, res := range r.Resources {
		if _, err := resourceEntity(res, kind); err != nil {
			return err
		}
	}
	if len(r.When) > maxWhen {
		return fmt.Errorf("when is over %d bytes", maxWhen)
	}
	return nil
}

// resourceEntity resolves a rule's resource: a Cedar entity literal, a
// server name, or SERVER/NAME, a tool or a route as kind (the rule's
// actions' resource type) says.
func resourceEntity(s string, kind cedar.EntityType) (cedar.EntityUID, error) {
	if strings.Contains(s, "::") {
		var uid cedar.EntityUID
		if err := uid.UnmarshalCedar([]byte(s)); err != nil {
			return uid, fmt.Errorf("resource %q is not a Cedar entity like ToolGroup::\"docs\"", s)
		}
		if !slices.Contains(entityTypes, uid.Type) {
			return uid, fmt.Errorf("resource %q: type %s is not one of %v", s, uid.Type, entityTypes)
		}
		return uid, nil
	}
	server, name, isEntry := strings.Cut(s, "/")
	if err := policy.ValidateName("server", server); err != nil {
		return cedar.EntityUID{}, fmt.Errorf("resource %q: %w", s, err)
	}
	if !isEntry {
		return policy.ToolServer(server), nil
	}
	if err := policy.ValidateName("tool or route", name); err != nil {
		return cedar.EntityUID{}, fmt.Errorf("resource %q: %w", s, err)
	}
	switch kind {
	case policy.TypeTool:
		return policy.Tool(server, name), nil
	case policy.TypeRoute:
		return policy.Route(server, name), nil
	case policy.TypeToolServer:
		return cedar.EntityUID{}, fmt.Errorf("resource %q: these actions apply to servers; name the server (%q)", s, server)
	}
	return cedar.EntityUID{}, fmt.Errorf("resource %q: these actions apply to several kinds of resource; write it as Tool::%q or Route::%q", s, s, s)
}
