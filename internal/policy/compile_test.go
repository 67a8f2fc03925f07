package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

func TestCompileReportsLocatedErrors(t *testing.T) {
	cases := []struct {
		name  string
		files []File
		want  []string // each Error's text, in order
	}{
		{"syntax", []File{{Name: "a.cedar", Content: "permit (principal, action, resource)\n  when { 1 + };"}},
			[]string{`a.cedar:2:15: parse error: ";": invalid primary`}},
		{"unknown entity type", []File{{Name: "dir/b.cedar", Content: "\npermit (principal == User::\"u\", action, resource);"}},
			[]string{"dir/b.cedar:2:1: policy \"dir/b.cedar#0\": unrecognized entity type `User`",
				"dir/b.cedar:2:1: policy \"dir/b.cedar#0\": unable to find an applicable action given the policy scope constraints"}},
		{"unknown action", []File{{Name: "c.cedar", Content: "@id(\"x\")\npermit (principal, action == Action::\"fly\", resource);"}},
			[]string{"c.cedar:1:1: policy \"x\": unrecognized action `Action::\"fly\"`",
				"c.cedar:1:1: policy \"x\": unable to find an applicable action given the policy scope constraints"}},
		{"optional attribute without has", []File{{Name: "d.cedar", Content: "forbid (principal, action == Action::\"call_tool\", resource) when { context.input.path == \"/\" };"}},
			[]string{"d.cedar:1:1: policy \"d.cedar#0\": unable to guarantee safety of access to optional attribute `input.path` in context for Action::\"call_tool\""}},
		{"duplicate id", []File{{Name: "e.cedar", Content: "@id(\"p\") permit (principal, action, resource);\n@id(\"p\") forbid (principal, action, resource);"}},
			[]string{`e.cedar:2:1: policy "p": id is already used by the policy at e.cedar:1:1`}},
		{"empty id", []File{{Name: "f.cedar", Content: "@id(\"\") permit (principal, action, resource);"}},
			[]string{"f.cedar:1:1: @id is empty"}},
		{"bad file name", []File{{Name: "../g.cedar", Content: ""}, {Name: "h.txt", Content: ""}},
			[]string{"../g.cedar: file name must be a relative path ending in .cedar or .cedarschema",
				"h.txt: file name must be a relative path ending in .cedar or .cedarschema"}},
		{"schema fragment redeclares a type", []File{{Name: "x.cedarschema", Content: "entity Agent;"}},
			[]string{"x.cedarschema: entity type Agent is already declared (by Bulkhead's schema or another file)"}},
		{"schema syntax", []File{{Name: "y.cedarschema", Content: "entity Doc {\n  owner: ,\n};"}},
			[]string{`y.cedarschema:2:10: expected identifier, got ","`}},
		{"errors in several files are all reported", []File{
			{Name: "1.cedar", Content: "permit (principal, action, resource) when { principal.nope };"},
			{Name: "2.cedar", Content: "permit (principal, action, resource"}},
			[]string{"1.cedar:1:1: policy \"1.cedar#0\": attribute `nope` on entity type `Agent` not found",
				"2.cedar:1:36: parse error at end of input: exact got  want )"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(c.files)
			var errs Errors
			if !errors.As(err, &errs) || !errors.Is(err, fault.Invalid) {
				t.Fatalf("Compile = %v, want Errors", err)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestOperatorsExtendTheSchema(t *testing.T) {
	files := []File{
		{Name: "schema/docs.cedarschema", Content: `
namespace Docs {
  entity Folder;
  entity Doc in [Folder] { classification: String };
  action view appliesTo { principal: [Agent], resource: [Doc], context: { risk: Long } };
}
// Tool arguments of this deployment: replaces Bulkhead's default.
type ToolInput = { path?: String, dry_run?: Bool };`},
		{Name: "docs.cedar", Content: `
@id("read-public-docs")
permit (principal in Role::"reader", action == Docs::Action::"view", resource in Docs::Folder::"public")
when { resource.classification != "secret" && context.risk < 50 };

@id("dry-runs-only")
forbid (principal, action == Action::"call_tool", resource)
unless { context.input has dry_run && context.input.dry_run };`},
	}
	set, err := Compile(files)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("bulkhead.local")
	alpha := spiffeid.RequireFromPath(td, "/agent/alpha")
	w := newWorld(td, []AgentRoles{{Name: "alpha", SPIFFEID: alpha.String(), Roles: []string{"reader"}}}, Catalog{})
	cs := newCompiledSet(set)
	doc := cedar.Entity{UID: cedar.NewEntityUID("Docs::Doc", "guide"), Parents: cedar.NewEntityUIDSet(cedar.NewEntityUID("Docs::Folder", "public")),
		Attributes: cedar.NewRecord(cedar.RecordMap{"classification": cedar.String("internal")})}
	v := &view{w: w, actions: cs.actions, extra: []*node{{entity: doc}}}
	req := cedar.Request{Principal: Agent(alpha), Action: cedar.NewEntityUID("Docs::Action", "view"), Resource: doc.UID,
		Context: cedar.NewRecord(cedar.RecordMap{"risk": cedar.Long(10)})}
	if allowed, reasons, errs := conclude(cs.evaluate(v, req)); !allowed || len(reasons) != 1 || reasons[0] != "read-public-docs" {
		t.Fatalf("operator action = %v %v %v", allowed, reasons, errs)
	}
	// The replaced ToolInput type is what policies are checked against.
	_, err = Compile(append(files, File{Name: "old.cedar", Content: `forbid (principal, action == Action::"call_tool", resource) when { context.input.url == "x" };`}))
	if err == nil || !strings.Contains(err.Error(), "url") {
		t.Fatalf("a policy using the default ToolInput's url after it was replaced: %v", err)
	}
}

func TestSubAgentEntities(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("bulkhead.local")
	alpha := spiffeid.RequireFromPath(td, "/agent/alpha")
	w := newWorld(td, []AgentRoles{{Name: "alpha", SPIFFEID: alpha.String(), Roles: []string{"reader"}}}, Catalog{})
	v := &view{w: w}
	sub := cedar.NewEntityUID(TypeAgent, "spiffe://bulkhead.local/agent/alpha/sub/w1/sub/w2")
	v.addAgent(sub)
	e, ok := v.Get(sub)
	if !ok {
		t.Fatal("sub-agent not synthesized")
	}
	depth, _ := e.Attributes.Get("depth")
	root, _ := e.Attributes.Get("root")
	parent, _ := e.Attributes.Get("parent")
	chain, _ := e.Attributes.Get("chain")
	if depth != cedar.Long(2) || root != Agent(alpha) || parent != cedar.NewEntityUID(TypeAgent, "spiffe://bulkhead.local/agent/alpha/sub/w1") ||
		chain.(cedar.Set).Len() != 2 {
		t.Fatalf("sub-agent attributes = %v", e.Attributes)
	}
	anc := v.ancestors(sub)
	want := map[cedar.EntityUID]bool{parent.(cedar.EntityUID): true, Agent(alpha): true, Role("reader"): true}
	if len(anc) != len(want) {
		t.Fatalf("ancestors = %v", anc)
	}
	for _, a := range anc {
		if !want[a] {
			t.Fatalf("ancestors = %v", anc)
		}
	}
	for _, bad := range []string{"spiffe://bulkhead.local/agent/alpha/w1", "spiffe://bulkhead.local/operator/x", "alpha", "spiffe://bulkhead.local/agent/a/sub/"} {
		if _, ok := parseAgentID(bad); ok {
			t.Errorf("%q parsed as an agent", bad)
		}
	}
}
