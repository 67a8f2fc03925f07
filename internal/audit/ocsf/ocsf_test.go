package ocsf_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/audit/ocsf"
)

var m = ocsf.Mapper{LogName: "test.local/audit", ProductVersion: "dev"}

func ev(action string, d audit.Decision, actor audit.ActorKind, target string) audit.Event {
	return audit.Event{Seq: 7, Time: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), Action: action, Decision: d,
		Actor: audit.Actor{Kind: actor, ID: "spiffe://test.local/" + map[audit.ActorKind]string{
			audit.ActorAgent: "agent/alpha", audit.ActorOperator: "operator/admin", audit.ActorWorkload: "bulkhead/gateway"}[actor]},
		Target: target, Reasons: []string{"because"}, Task: "t-1",
		Digests: map[string]string{"csr": "sha256:00"}, Detail: map[string]string{"policy": "p-1"}}
}

func TestClasses(t *testing.T) {
	agent := "spiffe://test.local/agent/alpha"
	cases := []struct {
		name            string
		ev              audit.Event
		class, activity int
		member          string // the class-specific object that must be set
	}{
		{"agent created", ev(audit.ActionAgentCreate, audit.Allow, audit.ActorOperator, agent), 3001, 1, "user"},
		{"agent disabled", ev(audit.ActionAgentDisable, audit.Allow, audit.ActorOperator, agent), 3001, 5, "user"},
		{"agent enabled", ev(audit.ActionAgentEnable, audit.Allow, audit.ActorOperator, agent), 3001, 2, "user"},
		{"agent revoked", ev(audit.ActionAgentRevoke, audit.Allow, audit.ActorOperator, agent), 3001, 9, "user"},
		{"svid issued", ev(audit.ActionSVIDIssue, audit.Allow, audit.ActorAgent, agent), 3002, 3, "user"},
		{"svid renewal refused", ev(audit.ActionSVIDRenew, audit.Deny, audit.ActorAgent, agent), 3002, 99, "user"},
		{"token issued", ev("token.issue", audit.Allow, audit.ActorAgent, agent), 3002, 4, "user"},
		{"svid revoked", ev(audit.ActionSVIDRevoke, audit.Allow, audit.ActorOperator, agent), 3004, 99, "entity"},
		{"join token", ev(audit.ActionJoinTokenCreate, audit.Allow, audit.ActorOperator, agent), 3004, 1, "entity"},
		{"policy applied", ev("policy.apply", audit.Allow, audit.ActorOperator, "policy-set"), 3004, 3, "entity"},
		{"audit pruned", ev(audit.ActionAuditPrune, audit.Allow, audit.ActorOperator, "test.local/audit"), 3004, 4, "entity"},
		{"server start", ev(audit.ActionServerStart, audit.Allow, audit.ActorSystem, "spiffe://test.local/bulkhead/server"), 6002, 3, "app"},
		{"api refusal", ev(audit.ActionAPIAccess, audit.Deny, audit.ActorAgent, "POST /v1/agents"), 6003, 99, "api"},
		{"a gateway decision", ev("gateway.call_tool", audit.Deny, audit.ActorAgent, "mcp://files/read"), 6003, 99, "api"},
		{"a gateway read", ev("gateway.read_resource", audit.Allow, audit.ActorAgent, "mcp://files/x"), 6003, 2, "api"},
		{"a gateway refusing a caller", ev("gateway.authenticate", audit.Deny, audit.ActorAgent, "/mcp"), 3002, 1, "user"},
		{"a PDP decision", ev("pdp.decision", audit.Allow, audit.ActorWorkload, "tool::files"), 6003, 99, "api"},
		{"role added", ev("role.add", audit.Allow, audit.ActorOperator, agent), 3001, 7, "user"},
		{"role removed", ev("role.remove", audit.Allow, audit.ActorOperator, agent), 3001, 8, "user"},
		{"sub-agent delegated", ev("agent.delegate", audit.Allow, audit.ActorAgent, agent), 3001, 99, "user"},
		{"subtree revoked", ev("agent.revoke_subtree", audit.Allow, audit.ActorOperator, agent), 3001, 9, "user"},
		{"secret revealed", ev("secret.reveal", audit.Allow, audit.ActorWorkload, "db-password"), 3004, 2, "entity"},
		{"policy rolled back", ev("policy.rollback", audit.Allow, audit.ActorOperator, "policy"), 3004, 3, "entity"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := m.Line(ocsf.FormatOCSF, c.ev)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			num := func(k string) int { f, _ := got[k].(float64); return int(f) }
			if num("class_uid") != c.class || num("activity_id") != c.activity || num("type_uid") != c.class*100+c.activity {
				t.Fatalf("class %v activity %v type %v, want %d/%d", got["class_uid"], got["activity_id"], got["type_uid"], c.class, c.activity)
			}
			for _, k := range []string{"category_uid", "severity_id", "time", "metadata", "actor", "status_id", c.member} {
				if _, ok := got[k]; !ok {
					t.Errorf("required attribute %q missing: %s", k, b)
				}
			}
			meta := got["metadata"].(map[string]any)
			if meta["version"] != ocsf.Version || meta["sequence"].(float64) != 7 || meta["uid"] != "test.local/audit/7" {
				t.Errorf("metadata = %v", meta)
			}
			if got["time"].(float64) != float64(c.ev.Time.UnixMilli()) {
				t.Errorf("time = %v", got["time"])
			}
		})
	}
}

func TestDecisionsAndActors(t *testing.T) {
	cases := []struct {
		d                          audit.Decision
		status, action, severity   int
		actorKind                  audit.ActorKind
		actorType                  int
		hasAuthorization, unmapped bool
	}{
		{audit.Allow, 1, 1, 1, audit.ActorOperator, 1, true, true},
		{audit.Deny, 2, 2, 3, audit.ActorAgent, 99, true, true},
		{audit.Failed, 2, 1, 2, audit.ActorWorkload, 3, false, true},
	}
	for _, c := range cases {
		t.Run(string(c.d), func(t *testing.T) {
			o := m.Map(ev(audit.ActionAgentCreate, c.d, c.actorKind, "spiffe://test.local/agent/alpha"))
			if o.StatusID != c.status || o.ActionID != c.action || o.SeverityID != c.severity {
				t.Fatalf("status %d action %d severity %d", o.StatusID, o.ActionID, o.SeverityID)
			}
			// Agents and people stay distinct in the export too.
			if o.Actor.User == nil || o.Actor.User.TypeID != c.actorType {
				t.Fatalf("actor = %+v", o.Actor.User)
			}
			if (len(o.Authorizations) > 0) != c.hasAuthorization {
				t.Fatalf("authorizations = %+v", o.Authorizations)
			}
			if c.hasAuthorization && (o.Authorizations[0].Policy == nil || o.Authorizations[0].Policy.UID != "p-1") {
				t.Fatalf("the deciding policy is lost: %+v", o.Authorizations)
			}
			if o.Unmapped["task"] != "t-1" || o.Unmapped["digests"] == nil || o.StatusDetail != "because" {
				t.Fatalf("facts without an OCSF attribute were dropped: %+v", o.Unmapped)
			}
			if o.User == nil || o.User.Name != "alpha" || o.User.TypeID != 99 {
				t.Fatalf("the agent changed is %+v", o.User)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for _, s := range []string{"ocsf", "json"} {
		if _, err := ocsf.ParseFormat(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ocsf.ParseFormat("cef"); err == nil {
		t.Error("cef accepted")
	}
	b, err := m.Line(ocsf.FormatJSON, ev(audit.ActionAgentCreate, audit.Allow, audit.ActorOperator, "x"))
	if err != nil {
		t.Fatal(err)
	}
	var back audit.Event
	if err := json.Unmarshal(b, &back); err != nil || back.Seq != 7 || back.Action != audit.ActionAgentCreate {
		t.Fatalf("json line = %s, %v", b, err)
	}
}

// An anomaly is a Detection Finding whose severity follows its risk, not
// the call's decision, with its reasons as the finding's types.
func TestAnomalyIsADetectionFinding(t *testing.T) {
	e := ev("gateway.anomaly", audit.Allow, audit.ActorAgent, `Tool::"files/read_file"`)
	e.Detail = map[string]string{"risk": "80", "risk_reasons": "novel_tool denials"}
	e.Reasons = []string{"novel tool Tool::\"files/read_file\"", "3 denials in the last hour"}
	out := m.Map(e)
	if out.ClassUID != ocsf.ClassDetectionFinding || out.CategoryUID != 2 || out.TypeUID != 200401 || out.FindingInfo == nil ||
		out.RiskScore == nil || *out.RiskScore != 80 || out.RiskLevel != "High" || out.SeverityID != 4 ||
		len(out.FindingInfo.Types) != 2 || out.FindingInfo.Types[1] != "denials" || out.FindingInfo.UID != "test.local/audit/7" {
		b, _ := json.Marshal(out)
		t.Fatalf("anomaly: %s", b)
	}
}
