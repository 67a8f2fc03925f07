package elevation

import (
	"fmt"
	"strings"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// A manifest compiles to one Cedar file of policies, all scoped to
// requests whose context.manifest names it (the PDP evaluates them for no
// other request, and each also says so):
//
//   - manifest:NAME:prohibited:I  forbid, one per prohibited rule;
//   - manifest:NAME:outside       forbid of everything that is neither an
//     approved action nor allowed by a grant in force: the task's baseline;
//   - manifest:NAME:trigger:T     permit of what trigger T grants, only
//     while context.grants contains "NAME/T".
//
// So a task can do no more than its approved actions (as far as the
// agent's roles allow them) until a human or the approval policy puts a
// grant in force, and never what is prohibited.

// GrantName is the name a grant of trigger in manifest has in
// context.grants.
func GrantName(manifest, trigger string) string { return manifest + "/" + trigger }

// TriggerPolicyID is the id of the permit that a grant of trigger enables.
func TriggerPolicyID(manifest, trigger string) string {
	return policy.ManagedPrefix + manifest + ":trigger:" + trigger
}

// ParseTriggerPolicyID returns the manifest and trigger of a trigger
// permit's id; ok is false for any other policy id.
func ParseTriggerPolicyID(id string) (manifest, trigger string, ok bool) {
	rest, ok := strings.CutPrefix(id, policy.ManagedPrefix)
	if !ok {
		return "", "", false
	}
	manifest, trigger, ok = strings.Cut(rest, ":trigger:")
	if !ok || ValidateName("manifest", manifest) != nil || ValidateName("trigger", trigger) != nil {
		return "", "", false
	}
	return manifest, trigger, true
}

// compiled is one generated policy: its id, effect and text.
type compiled struct {
	id     string
	forbid bool
	text   string
}

// Compile returns the managed policy set of manifest m (validated), to be
// stored with version. Each generated policy is parsed back on its own
// and must be exactly the one policy intended, so that no condition
// written in the manifest can end its policy early and add another.
func Compile(m Manifest, version int64) (policy.ManagedSet, error) {
	scope := fmt.Sprintf("context has manifest && context.manifest == %s", cedarString(m.Name))
	var out []compiled
	for i, r := range m.ProhibitedActions {
		cond, err := r.condition()
		if err != nil {
			return policy.ManagedSet{}, err
		}
		out = append(out, compiled{id: fmt.Sprintf("%s%s:prohibited:%d", policy.ManagedPrefix, m.Name, i), forbid: true,
			text: fmt.Sprintf("forbid (principal, action, resource)\nwhen { %s && %s };", scope, cond)})
	}
	var allowed []string
	for _, r := range m.ApprovedActions {
		cond, err := r.condition()
		if err != nil {
			return policy.ManagedSet{}, err
		}
		allowed = append(allowed, cond)
	}
	for _, t := range m.EscalationTriggers {
		grant, err := t.condition(m.Name)
		if err != nil {
			return policy.ManagedSet{}, err
		}
		allowed = append(allowed, grant)
		out = append(out, compiled{id: TriggerPolicyID(m.Name, t.Name),
			text: fmt.Sprintf("permit (principal, action, resource)\nwhen { %s && %s };", scope, grant)})
	}
	baseline := "false"
	if len(allowed) > 0 {
		baseline = strings.Join(allowed, " ||\n  ")
	}
	out = append(out, compiled{id: policy.ManagedPrefix + m.Name + ":outside", forbid: true,
		text: fmt.Sprintf("forbid (principal, action, resource)\nwhen { %s }\nunless {\n  %s\n};", scope, baseline)})

	var b strings.Builder
	fmt.Fprintf(&b, "// Compiled from manifest %s, version %d. Apply the manifest to change it.\n", m.Name, version)
	for _, c := range out {
		text := fmt.Sprintf("@id(%s)\n%s\n", cedarString(c.id), c.text)
		if err := checkOne(text, c); err != nil {
			return policy.ManagedSet{}, fmt.Errorf("%w: manifest %s: %w", fault.Invalid, m.Name, err)
		}
		b.WriteString("\n" + text)
	}
	files := []policy.File{{Name: m.Name + ".cedar", Content: b.String()}}
	return policy.ManagedSet{Name: m.Name, Version: version, Files: files, Digest: policy.Digest(files)}, nil
}

// checkOne parses text alone and checks it is exactly c.
func checkOne(text string, c compiled) error {
	list, err := cedar.NewPolicyListFromBytes("manifest.cedar", []byte(text))
	if err != nil {
		return fmt.Errorf("policy %s does not parse (check its when conditions): %w", c.id, err)
	}
	if len(list) != 1 {
		return fmt.Errorf("policy %s: a when condition must be one Cedar expression", c.id)
	}
	p := list[0]
	if id := p.Annotations()["id"]; string(id) != c.id || len(p.Annotations()) != 1 || (p.Effect() == cedar.Forbid) != c.forbid {
		return fmt.Errorf("policy %s: a when condition must be one Cedar expression", c.id)
	}
	return nil
}

// condition is the Cedar expression a rule matches.
func (r Rule) condition() (string, error) {
	acts := make([]string, len(r.Actions))
	kind := cedar.EntityType("?")
	for i, a := range r.Actions {
		acts[i] = policy.Action(a).String()
		switch k := resourceKind[a]; {
		case kind == "?":
			kind = k
		case kind != k:
			kind = ""
		}
	}
	parts := []string{fmt.Sprintf("action in [%s]", strings.Join(acts, ", "))}
	if len(r.Resources) > 0 {
		// One "in" per entity: a Cedar set must hold one type.
		var ors []string
		for _, s := range r.Resources {
			uid, err := resourceEntity(s, kind)
			if err != nil {
				return "", fmt.Errorf("%w: %w", fault.Invalid, err)
			}
			ors = append(ors, "resource in "+uid.String())
		}
		parts = append(parts, "("+strings.Join(ors, " || ")+")")
	}
	if w := strings.TrimSpace(r.When); w != "" {
		parts = append(parts, "("+w+")")
	}
	return "(" + strings.Join(parts, " && ") + ")", nil
}

// condition is the Cedar expression of what a trigger's grant allows.
func (t Trigger) condition(manifest string) (string, error) {
	var ors []string
	for _, r := range t.Grants {
		c, err := r.condition()
		if err != nil {
			return "", err
		}
		ors = append(ors, c)
	}
	return fmt.Sprintf("(context.grants.contains(%s) && (%s))", cedarString(GrantName(manifest, t.Name)), strings.Join(ors, " || ")), nil
}

// cedarString is s as a Cedar string literal.
func cedarString(s string) string { return string(cedar.String(s).MarshalCedar()) }
