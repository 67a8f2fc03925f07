package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

const alphaJSON = `{"type":"Agent","id":"spiffe://bulkhead.local/agent/alpha"}`

func TestParseAuthZENRefusesWhatItCannotMap(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"not JSON", `{`, "invalid request: body is not an AuthZEN evaluation request: unexpected EOF"},
		{"unknown member", `{"subject":` + alphaJSON + `,"sujet":1}`, `invalid request: body is not an AuthZEN evaluation request: json: unknown field "sujet"`},
		{"missing resource", `{"subject":` + alphaJSON + `,"action":{"name":"call_tool"}}`, "invalid request: subject, action and resource are required"},
		{"agent id not a SPIFFE ID", `{"subject":{"type":"Agent","id":"alpha"},"action":{"name":"call_tool"},"resource":{"type":"Tool","id":"d/s"}}`,
			`invalid request: an Agent's id is its SPIFFE ID (spiffe://TRUST-DOMAIN/agent/NAME), not "alpha"`},
		{"bad entity type", `{"subject":` + alphaJSON + `,"action":{"name":"call_tool"},"resource":{"type":"Tool Box","id":"x"}}`,
			`resource.type: invalid request: "Tool Box" is not a Cedar entity type name`},
		{"action as a resource", `{"subject":` + alphaJSON + `,"action":{"name":"call_tool"},"resource":{"type":"Action","id":"x"}}`,
			"invalid request: resource.type may not be an action type"},
		{"action reference of another type", `{"subject":` + alphaJSON + `,"action":{"name":"Tool::\"x\""},"resource":{"type":"Tool","id":"x"}}`,
			`invalid request: action.name "Tool::\"x\"" is neither an action id nor an action reference like NS::Action::"x"`},
		{"risk out of range", `{"subject":` + alphaJSON + `,"action":{"name":"call_tool"},"resource":{"type":"Tool","id":"x"},"context":{"risk":101}}`,
			"invalid request: context.risk must be an integer from 0 to 100"},
		{"input not an object", `{"subject":` + alphaJSON + `,"action":{"name":"call_tool"},"resource":{"type":"Tool","id":"x"},"context":{"input":[1]}}`,
			"invalid request: context.input must be an object of tool arguments"},
		{"float beyond decimal", `{"subject":` + alphaJSON + `,"action":{"name":"call_tool"},"resource":{"type":"Tool","id":"x"},"context":{"input":{"t":0.123456}}}`,
			"context.input: t: invalid request: number 0.123456 does not fit a Cedar decimal (at most 4 decimal places)"},
		{"unknown semantic", `{"subject":` + alphaJSON + `,"options":{"evaluations_semantic":"best_effort"},"evaluations":[{}]}`,
			`invalid request: unknown evaluations_semantic "best_effort"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseAuthZEN([]byte(c.body))
			if err == nil || err.Error() != c.want || !errors.Is(err, fault.Invalid) {
				t.Fatalf("error = %v\nwant   %s", err, c.want)
			}
		})
	}
}

func TestParseAuthZENMapsToCedar(t *testing.T) {
	b, err := parseAuthZEN([]byte(`{
	  "subject": {"type": "Agent", "id": "spiffe://bulkhead.local/agent/alpha", "properties": {"roles": ["admin"]}},
	  "action": {"name": "call_tool"},
	  "resource": {"type": "Docs::Doc", "id": "d1", "properties": {"owner": {"__entity": {"type": "Agent", "id": "x"}}, "size": 3}},
	  "context": {"risk": 7, "tainted": true, "task": "t-42", "time": "1999-01-01", "grants": ["g1"],
	              "input": {"path": "/etc/passwd", "opts": {"depth": 2, "ratio": 0.5}, "tags": ["a"], "skip": null,
	                        "smuggled": {"__entity": {"type": "Role", "id": "admin"}}},
	              "source": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	it := b.items[0]
	if !b.single || it.err != nil || it.task != "t-42" {
		t.Fatalf("parsed = %+v", b)
	}
	pr := it.pr
	if pr.principal != cedar.NewEntityUID("Agent", "spiffe://bulkhead.local/agent/alpha") || pr.action != Action("call_tool") ||
		pr.resource != cedar.NewEntityUID("Docs::Doc", "d1") {
		t.Fatalf("request = %v %v %v", pr.principal, pr.action, pr.resource)
	}
	// Properties of Bulkhead's own types are ignored (roles come from the
	// store); those of the operator's types become the entity.
	if len(pr.extra) != 1 || pr.extra[0].UID != pr.resource {
		t.Fatalf("extra entities = %+v", pr.extra)
	}
	if owner, _ := pr.extra[0].Attributes.Get("owner"); owner != cedar.NewEntityUID("Agent", "x") {
		t.Fatalf("owner = %v", owner)
	}
	req := pr.build(t0)
	want := `{"attestation":{"ek":"", "lineage_depth":0, "method":"none", "protection":"software"}, "grants":["g1"], "input":{"opts":{"depth":2, "ratio":decimal("0.5")}, "path":"/etc/passwd", ` +
		`"smuggled":{"__entity":{"id":"admin", "type":"Role"}}, "tags":["a"]}, "risk":7, "risk_reasons":[], ` +
		`"source":ip("10.1.2.3"), "tainted":true, "task":Task::"t-42", "time":datetime("2026-11-15T09:00:00.000Z")}`
	if got := req.Context.String(); got != want {
		t.Fatalf("context:\n got %s\nwant %s", got, want)
	}
}

var t0 = time.Date(2026, 11, 15, 9, 0, 0, 0, time.UTC)
