package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Fuzz targets for every parser of outside input this package adds. Each
// must refuse bad input with a fault kind, never panic, and never accept
// what it cannot represent.

func FuzzParseAuthZEN(f *testing.F) {
	for _, s := range []string{
		`{"subject":{"type":"Agent","id":"spiffe://bulkhead.local/agent/alpha"},"action":{"name":"call_tool"},"resource":{"type":"Tool","id":"docs/search"},"context":{"risk":5,"input":{"path":"/etc/x","n":1.5,"tags":["a"]}}}`,
		`{"subject":{"type":"Agent","id":"spiffe://bulkhead.local/agent/a/sub/b"},"action":{"name":"NS::Action::\"x\""},"resource":{"type":"Doc","id":"1","properties":{"owner":{"__entity":{"type":"User","id":"u"}},"ip":{"__extn":{"fn":"ip","arg":"10.0.0.1"}}}}}`,
		`{"subject":{"type":"Agent","id":"x"},"action":{"name":"a"},"resource":{"type":"T","id":"r"},"evaluations":[{},{"resource":{"type":"T","id":"s"}}],"options":{"evaluations_semantic":"deny_on_first_deny"}}`,
		`{"context":{"task":"t1","grants":["g"],"time":"now"}}`,
		`{"context":{"input":{"__entity":{"type":"Role","id":"admin"}}}}`,
		`[]`, `null`, `{"subject":null}`, `{"evaluations":[{"evaluations":[]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := parseAuthZEN(body)
		if err != nil {
			if !errors.Is(err, fault.Invalid) && !errors.Is(err, fault.TooLarge) {
				t.Fatalf("error without a fault kind: %v", err)
			}
			return
		}
		if len(b.items) == 0 || b.single && len(b.items) != 1 {
			t.Fatalf("parsed %d items (single %v)", len(b.items), b.single)
		}
		for _, it := range b.items {
			if it.err != nil {
				if !errors.Is(it.err, fault.Invalid) {
					t.Fatalf("item error without a fault kind: %v", it.err)
				}
				continue
			}
			pr := it.pr
			if pr.principal.Type == "" || pr.action.Type == "" || pr.resource.Type == "" {
				t.Fatalf("accepted a request with an empty entity: %+v", pr)
			}
			// Tool arguments never carry entity references: an agent
			// cannot shape its input into a principal or a role.
			if in, ok := pr.ctx[ctxInput]; ok && containsEntity(in) {
				t.Fatalf("input holds an entity: %v", in)
			}
			for _, e := range pr.extra {
				if managed[e.UID.Type] {
					t.Fatalf("request supplied a %s entity", e.UID.Type)
				}
			}
			_ = pr.build(time.Unix(0, 0))
		}
	})
}

func FuzzInputFromJSON(f *testing.F) {
	for _, s := range []string{`{"path":"/etc/passwd"}`, `{"a":{"b":[1,2.25,"x",true]}}`, `{"n":1e400}`, `{"n":0.12345}`, `null`, `[]`, `{"x":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := InputFromJSON(b)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("error without a fault kind: %v", err)
			}
			return
		}
		if containsEntity(r) {
			t.Fatalf("input holds an entity: %v", r)
		}
	})
}

func FuzzParseCatalog(f *testing.F) {
	for _, s := range []string{
		"servers:\n  - name: docs\n    groups: [docs]\n    tools:\n      - name: search\n        sensitivity: high\n",
		`{"servers":[{"name":"a","routes":[{"name":"r","method":"GET"}]}]}`,
		"servers:\n  - name: a\n  - name: a\n", "servers: [{name: 'a/b'}]", "bogus: 1", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCatalog("fuzz.yaml", b)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("error without a fault kind: %v", err)
			}
			return
		}
		// A normalized catalog is explicit and stable.
		for _, s := range c.Servers {
			if s.UntrustedOutput == nil || s.Sensitivity == "" {
				t.Fatalf("server %q not normalized", s.Name)
			}
			for _, e := range append(append([]ToolEntry{}, s.Tools...), s.Routes...) {
				if e.UntrustedOutput == nil || e.Sensitivity == "" {
					t.Fatalf("entry %s/%s not normalized", s.Name, e.Name)
				}
			}
		}
		again := c
		if err := again.Normalize(); err != nil {
			t.Fatalf("normalizing twice: %v", err)
		}
		_ = c.entities()
	})
}

func FuzzParseTestFile(f *testing.F) {
	for _, s := range []string{
		"policies: p\ncases:\n  - name: a\n    principal: alpha\n    action: call_tool\n    resource: Tool::\"d/s\"\n    context: {input: {path: /x}, risk: 3}\n    expect: allow\n    reasons: [r]\n",
		`{"policies":"p","cases":[{"principal":"spiffe://td/agent/a/sub/b","action":"GET","resource":"Route::\"a/b\"","expect":"deny","time":"2026-01-01T00:00:00Z"}]}`,
		"policies: p\nagents: {a: [r, 'x y']}\ncases: []\n", "cases: 1", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tf, err := ParseTestFile("fuzz.yaml", b)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("error without a fault kind: %v", err)
			}
			return
		}
		set, err := Compile([]File{{Name: "p.cedar", Content: "permit (principal, action, resource);"}})
		if err != nil {
			t.Fatal(err)
		}
		rep := tf.Run(set, Catalog{}, time.Unix(0, 0))
		if rep.Passed+rep.Failed != len(tf.Cases) {
			t.Fatalf("ran %d of %d cases", rep.Passed+rep.Failed, len(tf.Cases))
		}
	})
}

func FuzzCompile(f *testing.F) {
	f.Add("permit (principal in Role::\"r\", action == Action::\"call_tool\", resource in ToolGroup::\"g\") when { context.input has path };", "type ToolInput = { path?: String };")
	f.Add("@id(\"x\") forbid (principal, action, resource) unless { principal.depth < 2 };", "entity Doc;")
	f.Add("permit (principal, action, resource) when {", "entity Agent;")
	f.Fuzz(func(t *testing.T, policies, schema string) {
		s, err := Compile([]File{{Name: "p.cedar", Content: policies}, {Name: "s.cedarschema", Content: schema}})
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 || !errors.Is(err, fault.Invalid) {
				t.Fatalf("error that is not a located policy error: %v", err)
			}
			for _, e := range es {
				if e.File == "" {
					t.Fatalf("error without a file: %v", e)
				}
			}
			return
		}
		if s.index == nil || len(s.ids) != s.Len() {
			t.Fatal("compiled set is incomplete")
		}
	})
}

func containsEntity(v any) bool {
	switch t := v.(type) {
	case cedar.EntityUID:
		return true
	case cedar.Record:
		for _, e := range t.All() {
			if containsEntity(e) {
				return true
			}
		}
	case cedar.Set:
		for e := range t.All() {
			if containsEntity(e) {
				return true
			}
		}
	}
	return false
}
