package policy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("bulkhead.local")
	operator = audit.Actor{Kind: audit.ActorOperator, ID: "spiffe://bulkhead.local/operator/admin"}
)

const examples = "../../examples/policies"

func agentUID(name string) cedar.EntityUID {
	return policy.Agent(spiffeid.RequireFromPath(td, "/agent/"+name))
}

type fixture struct {
	t     *testing.T
	db    *store.DB
	svc   *policy.Service
	clock *clock.Fake
}

// newFixture opens a real store of backend b with the example catalog
// applied and agents alpha (reader), root (admin) and nobody.
func newFixture(t *testing.T, b storetest.Backend) *fixture {
	t.Helper()
	db := b.Open(t)
	f := &fixture{t: t, db: db, clock: clock.NewFake(time.Date(2026, 11, 15, 9, 0, 0, 0, time.UTC))}
	f.svc = f.service(db)
	for name, roles := range map[string][]string{"alpha": {"reader"}, "root": {"admin"}, "nobody": nil} {
		f.createAgent(name)
		for _, r := range roles {
			if _, err := f.svc.AddRole(context.Background(), operator, name, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	cat, err := policy.ParseCatalog("tools.yaml", readFile(t, examples+"/tools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ApplyCatalog(context.Background(), operator, cat); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) service(db *store.DB) *policy.Service {
	f.t.Helper()
	svc, err := policy.New(context.Background(), policy.Config{Store: db, Audit: audit.New(db, f.clock, storetest.Logger(f.t)),
		TrustDomain: td, Clock: f.clock, Logger: storetest.Logger(f.t)})
	if err != nil {
		f.t.Fatal(err)
	}
	return svc
}

func (f *fixture) createAgent(name string) {
	f.t.Helper()
	a := identity.Agent{Name: name, SPIFFEID: "spiffe://bulkhead.local/agent/" + name, Status: identity.StatusActive,
		SVIDTTL: time.Hour, CreatedAt: f.clock.Now(), CreatedBy: operator.ID, UpdatedAt: f.clock.Now()}
	if err := f.db.CreateAgent(context.Background(), a); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) apply(dir string, shadow bool) policy.Version {
	f.t.Helper()
	files, err := policy.LoadDir(dir)
	if err != nil {
		f.t.Fatal(err)
	}
	v, err := f.svc.Apply(context.Background(), operator, files, shadow, "")
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func callTool(principal cedar.EntityUID, server, tool string, input cedar.RecordMap) policy.Request {
	return policy.Request{Principal: principal, Action: policy.Action(policy.ActionCallTool), Resource: policy.Tool(server, tool),
		Context: policy.Context{Input: cedar.NewRecord(input)}}
}

func TestDecideThroughTheGoAPI(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			f := newFixture(t, b)
			v := f.apply(examples+"/live", false)
			alpha, root := agentUID("alpha"), agentUID("alpha/sub/w1")
			admin := agentUID("root")
			cases := []struct {
				name    string
				req     policy.Request
				allowed bool
				reasons []string
			}{
				{"reader may call a docs tool", callTool(alpha, "docs", "search", nil), true, []string{"reader-docs"}},
				{"reader may not call a tool outside docs", callTool(alpha, "wiki", "search", nil), false, []string{}},
				{"reader may not list tools", policy.Request{Principal: alpha, Action: policy.Action(policy.ActionListTools), Resource: policy.ToolServer("docs")}, false, []string{}},
				{"reader may not GET a route", policy.Request{Principal: alpha, Action: policy.Action("GET"), Resource: policy.Route("billing", "invoices")}, false, []string{}},
				{"a reader's sub-agent inherits the role", callTool(root, "docs", "search", nil), true, []string{"reader-docs"}},
				{"high sensitivity beats the reader permit", callTool(alpha, "docs", "delete_page", nil), false, []string{"forbid-high-sensitivity"}},
				{"high sensitivity beats the admin permit", callTool(admin, "vault", "get_secret", nil), false, []string{"forbid-high-sensitivity"}},
				{"admin may call a medium tool", callTool(admin, "files", "write_file", nil), true, []string{"admin-all"}},
				{"a path under /etc is denied", callTool(alpha, "files", "read_file", cedar.RecordMap{"path": cedar.String("/etc/passwd")}), false, []string{"forbid-etc"}},
				{"the same call with another path is allowed", callTool(alpha, "files", "read_file", cedar.RecordMap{"path": cedar.String("/srv/etc/passwd")}), true, []string{"reader-docs"}},
				{"an agent without roles is denied", callTool(agentUID("nobody"), "docs", "search", nil), false, []string{}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					d, err := f.svc.Decide(context.Background(), c.req)
					if err != nil {
						t.Fatal(err)
					}
					if d.Allowed != c.allowed || !slices.Equal(d.Reasons, c.reasons) || d.Version != v.Number || d.ID == "" || len(d.Errors) != 0 {
						t.Fatalf("decision = %+v, want allowed=%v reasons=%v version %d", d, c.allowed, c.reasons, v.Number)
					}
				})
			}
		})
	}
}

// TestPathArgsMustBeCanonical: a compromised agent tries to reach /etc
// through a tool whose catalog marks "path" as a path, with spellings a
// pattern like "/etc/*" does not see. Each is denied before any policy
// (even a permit-all), naming the argument.
func TestPathArgsMustBeCanonical(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/all.cedar", []byte(`@id("allow-all") permit (principal, action, resource);`), 0o600); err != nil {
		t.Fatal(err)
	}
	f.apply(dir, false)
	alpha := agentUID("alpha")
	for _, c := range []struct {
		name string
		path cedar.Value
		ok   bool
	}{
		{"canonical", cedar.String("/srv/docs/readme.md"), true},
		{"relative canonical", cedar.String("docs/readme.md"), true},
		{"dot-dot", cedar.String("/srv/../etc/passwd"), false},
		{"dot", cedar.String("/srv/./x"), false},
		{"double slash", cedar.String("/srv//etc"), false},
		{"backslash", cedar.String(`..\etc\passwd`), false},
		{"encoded dot-dot", cedar.String("/srv/%2e%2e/etc/passwd"), false},
		{"encoded slash", cedar.String("/srv/..%2fetc"), false},
		{"fullwidth dots", cedar.String("/srv/\uff0e\uff0e/etc/passwd"), false},
		{"NUL", cedar.String("/srv/x\x00.txt"), false},
		{"trailing slash", cedar.String("/etc/"), false},
		{"list with one bad path", cedar.NewSet(cedar.String("/srv/a"), cedar.String("/srv/../etc")), false},
		{"not a string", cedar.Long(1), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := f.svc.Decide(context.Background(), callTool(alpha, "files", "read_file", cedar.RecordMap{"path": c.path}))
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != c.ok {
				t.Fatalf("decision %+v, want allowed=%v", d, c.ok)
			}
			if !c.ok && (len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], policy.PathArgsReason+`: argument "path"`)) {
				t.Fatalf("reasons %v do not name the argument", d.Reasons)
			}
		})
	}
	// A tool without path_args is the policies' business.
	d, err := f.svc.Decide(context.Background(), callTool(alpha, "docs", "search", cedar.RecordMap{"path": cedar.String("/a/../b")}))
	if err != nil || !d.Allowed {
		t.Fatalf("a tool without path_args: %+v %v", d, err)
	}
}

// The catalog's effects and sensitivity reach the decision: only an
// allowed call to a tool declared read-only is one; a denial never is,
// and a tool the catalog does not describe is a write of no known
// sensitivity.
func TestDecisionsCarryDeclaredEffects(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/p.cedar", []byte(`@id("allow-all") permit (principal, action, resource);
@id("not-beta") forbid (principal == Agent::"spiffe://bulkhead.local/agent/beta", action, resource);`), 0o600); err != nil {
		t.Fatal(err)
	}
	f.apply(dir, false)
	for _, c := range []struct {
		agent, server, tool string
		allowed, readOnly   bool
		sensitivity         string
	}{
		{"alpha", "files", "read_file", true, true, "medium"},
		{"alpha", "files", "write_file", true, false, "medium"},
		{"alpha", "vault", "get_secret", true, false, "high"},
		{"beta", "files", "read_file", false, false, ""},
		{"alpha", "files", "not-in-catalog", true, false, ""},
	} {
		d, err := f.svc.Decide(context.Background(), callTool(agentUID(c.agent), c.server, c.tool, cedar.RecordMap{"path": cedar.String("/srv/a")}))
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != c.allowed || d.ReadOnly != c.readOnly || d.Sensitivity != c.sensitivity {
			t.Errorf("%s: %s/%s: allowed %v read-only %v sensitivity %q, want %v %v %q", c.agent, c.server, c.tool, d.Allowed, d.ReadOnly, d.Sensitivity,
				c.allowed, c.readOnly, c.sensitivity)
		}
	}
	for _, bad := range []string{"delete", "READ", "none"} {
		_, err := policy.ParseCatalog("t.yaml", []byte("servers:\n  - name: s\n    tools:\n      - { name: t, effects: "+bad+" }\n"))
		if err == nil || !strings.Contains(err.Error(), "effects") {
			t.Errorf("effects %q: %v", bad, err)
		}
	}
	cat, err := policy.ParseCatalog("t.yaml", []byte("servers:\n  - name: s\n    tools:\n      - { name: t }\n"))
	if err != nil || cat.Servers[0].Tools[0].Effects != policy.EffectsWrite {
		t.Fatalf("an undeclared tool's effects: %+v %v", cat, err)
	}
}

func TestEvaluationErrorsDeny(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	f.apply(examples+"/live", false)
	// The admin permit matches, but the sensitivity forbid cannot be
	// evaluated for a tool the catalog does not describe: deny, and say
	// why.
	d, err := f.svc.Decide(context.Background(), callTool(agentUID("root"), "docs", "not-in-catalog", nil))
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || len(d.Reasons) != 0 || len(d.Errors) != 1 || d.Errors[0].PolicyID != "forbid-high-sensitivity" {
		t.Fatalf("decision = %+v, want a deny by error", d)
	}
	// A type error in an argument (path is a number) denies too. (A tool
	// whose path_args name "path" denies it before any policy.)
	d, _ = f.svc.Decide(context.Background(), callTool(agentUID("alpha"), "docs", "search", cedar.RecordMap{"path": cedar.Long(1)}))
	if d.Allowed || len(d.Errors) == 0 {
		t.Fatalf("decision with a mistyped argument = %+v", d)
	}
}

func TestNothingAppliedDeniesEverything(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	d, err := f.svc.Decide(context.Background(), callTool(agentUID("root"), "docs", "search", nil))
	if err != nil || d.Allowed || d.Version != 0 {
		t.Fatalf("decision before any apply = %+v, %v", d, err)
	}
}

func TestRequestsMayNotSupplyBulkheadEntities(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	f.apply(examples+"/live", false)
	req := callTool(agentUID("nobody"), "docs", "search", nil)
	req.Entities = []cedar.Entity{{UID: agentUID("nobody"), Parents: cedar.NewEntityUIDSet(policy.Role("admin"))}}
	d, err := f.svc.Decide(context.Background(), req)
	if !errors.Is(err, fault.Invalid) || d.Allowed {
		t.Fatalf("a request that claims a role = %+v, %v", d, err)
	}
}

func TestInvalidApplyIsLocatedAndChangesNothing(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	good := f.apply(examples+"/live", false)
	files, err := policy.LoadDir(examples + "/live")
	if err != nil {
		t.Fatal(err)
	}
	bad := append(files,
		policy.File{Name: "broken/syntax.cedar", Content: "permit (principal, action, resource)\nwhen { principal.depth > };\n"},
		policy.File{Name: "typo.cedar", Content: "// a typo in an attribute\n\n  forbid (principal, action, resource)\n  when { resource.sensitivty == \"high\" };\n"},
	)
	_, err = f.svc.Apply(context.Background(), operator, bad, false, "")
	var errs policy.Errors
	// The typo is reported once per resource type it could apply to (tool,
	// server, route, host).
	if !errors.As(err, &errs) || !errors.Is(err, fault.Invalid) || len(errs) != 5 {
		t.Fatalf("apply of a broken set: %v", err)
	}
	if e := errs[0]; e.File != "broken/syntax.cedar" || e.Line != 2 || e.Column == 0 {
		t.Errorf("syntax error located at %s:%d:%d: %v", e.File, e.Line, e.Column, e)
	}
	if e := errs[1]; e.File != "typo.cedar" || e.Line != 3 || e.Column != 3 || !strings.Contains(e.Msg, "sensitivty") {
		t.Errorf("schema error = %v", e)
	}
	if live, _ := f.svc.State(); live != good.Number {
		t.Fatalf("live version %d after a refused apply, want %d", live, good.Number)
	}
	vs, st, err := f.svc.Versions(context.Background())
	if err != nil || len(vs) != 1 || st.Live != good.Number {
		t.Fatalf("versions after a refused apply: %d, state %+v, %v", len(vs), st, err)
	}
	// The refusal is the caller's error; nothing was recorded as applied.
	rows, _ := f.db.Events(context.Background(), audit.Query{AfterSeq: -1, Actions: []string{policy.ActionPolicyApply}})
	if len(rows) != 1 {
		t.Fatalf("%d apply records, want 1", len(rows))
	}
}

func TestShadowReportsExactlyTheFlips(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			f := newFixture(t, b)
			ctx := context.Background()
			live := f.apply(examples+"/live", false)
			cand := f.apply(examples+"/candidate", true)
			if l, s := f.svc.State(); l != live.Number || s != cand.Number {
				t.Fatalf("state = %d/%d", l, s)
			}
			sub := agentUID("alpha/sub/w1")
			reqs := []struct {
				req  policy.Request
				flip bool
			}{
				{callTool(agentUID("alpha"), "docs", "search", nil), false},      // allowed by both
				{callTool(agentUID("alpha"), "wiki", "search", nil), true},       // deny → allow
				{callTool(sub, "docs", "search", nil), true},                     // allow → deny
				{callTool(sub, "docs", "read_page", nil), true},                  // allow → deny
				{callTool(agentUID("root"), "vault", "get_secret", nil), false},  // denied by both
				{callTool(agentUID("nobody"), "wiki", "search", nil), false},     // denied by both
				{callTool(agentUID("alpha"), "wiki", "edit_page", nil), true},    // deny → allow
				{callTool(agentUID("alpha"), "files", "read_file", nil), false},  // allowed by both
				{callTool(agentUID("alpha"), "docs", "delete_page", nil), false}, // forbidden by both
			}
			want := map[string]bool{}
			for _, r := range reqs {
				d, err := f.svc.Decide(ctx, r.req)
				if err != nil {
					t.Fatal(err)
				}
				if d.Version != live.Number {
					t.Fatalf("decided with version %d, want the live %d", d.Version, live.Number)
				}
				if r.flip {
					want[d.ID] = true
				}
			}
			sum, diffs, err := f.svc.ShadowReport(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, d := range diffs {
				got[d.DecisionID] = true
				if d.LiveAllowed == d.ShadowAllowed || d.LiveVersion != live.Number || d.ShadowVersion != cand.Number {
					t.Errorf("difference %+v", d)
				}
			}
			if len(got) != len(want) || len(diffs) != len(want) {
				t.Fatalf("report lists %v, want exactly %v", got, want)
			}
			for id := range want {
				if !got[id] {
					t.Fatalf("report misses %s: %v", id, got)
				}
			}
			if sum.Evaluated != int64(len(reqs)) || sum.AllowToDeny != 2 || sum.DenyToAllow != 2 {
				t.Fatalf("summary = %+v", sum)
			}
			// Explaining is not a real request: no shadow evaluation.
			if _, err := f.svc.Explain(ctx, callTool(agentUID("alpha"), "wiki", "search", nil), 0); err != nil {
				t.Fatal(err)
			}
			if sum, _, _ := f.svc.ShadowReport(ctx, 0, 0); sum.Evaluated != int64(len(reqs)) {
				t.Fatalf("explain counted as a real request: %+v", sum)
			}
			// Promotion makes the candidate live.
			if _, err := f.svc.Promote(ctx, operator); err != nil {
				t.Fatal(err)
			}
			d, _ := f.svc.Decide(ctx, callTool(agentUID("alpha"), "wiki", "search", nil))
			if !d.Allowed || d.Version != cand.Number {
				t.Fatalf("after promotion: %+v", d)
			}
		})
	}
}

func TestRollbackRestoresAnEarlierVersion(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	ctx := context.Background()
	v1 := f.apply(examples+"/live", false)
	v2 := f.apply(examples+"/candidate", false)
	req := callTool(agentUID("alpha"), "wiki", "search", nil)
	if d, _ := f.svc.Decide(ctx, req); !d.Allowed || d.Version != v2.Number {
		t.Fatalf("v2 decision = %+v", d)
	}
	if _, err := f.svc.Rollback(ctx, operator, v1.Number); err != nil {
		t.Fatal(err)
	}
	if d, _ := f.svc.Decide(ctx, req); d.Allowed || d.Version != v1.Number {
		t.Fatalf("after rollback = %+v", d)
	}
	if _, err := f.svc.Rollback(ctx, operator, 99); !errors.Is(err, fault.NotFound) {
		t.Fatalf("rollback to a missing version: %v", err)
	}
}

func TestReplicasPickUpChangesWithoutRestart(t *testing.T) {
	// Replicas share PostgreSQL; a SQLite store has one control plane
	// (store's TestJournalHasOneAppender).
	for _, b := range []storetest.Backend{storetest.Postgres} {
		t.Run(b.Name, func(t *testing.T) {
			dsn, dir := b.DSN(t)
			open := func() *store.DB {
				db, err := store.Open(context.Background(), dsn, dir, storetest.Logger(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			}
			first := &fixture{t: t, db: open(), clock: clock.NewFake(time.Now())}
			first.svc = first.service(first.db)
			first.createAgent("alpha")
			// The second replica polls every 10ms on the real clock.
			dbB := open()
			second, err := policy.New(context.Background(), policy.Config{Store: dbB, Audit: audit.New(dbB, clock.Real{}, storetest.Logger(t)),
				TrustDomain: td, Clock: clock.Real{}, Logger: storetest.Logger(t), PollInterval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- second.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()

			cat, _ := policy.ParseCatalog("tools.yaml", readFile(t, examples+"/tools.yaml"))
			if _, err := first.svc.ApplyCatalog(context.Background(), operator, cat); err != nil {
				t.Fatal(err)
			}
			if _, err := first.svc.AddRole(context.Background(), operator, "alpha", "reader"); err != nil {
				t.Fatal(err)
			}
			v := first.apply(examples+"/live", false)
			req := callTool(agentUID("alpha"), "docs", "search", nil)
			deadline := time.Now().Add(10 * time.Second)
			for {
				d, err := second.Decide(context.Background(), req)
				if err == nil && d.Allowed && d.Version == v.Number {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the second replica never decided with version %d: %+v, %v", v.Number, d, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestStoreOutageFailsClosed(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	f.apply(examples+"/live", false)
	req := callTool(agentUID("alpha"), "docs", "search", nil)
	if d, err := f.svc.Decide(context.Background(), req); err != nil || !d.Allowed {
		t.Fatalf("before the outage: %+v, %v", d, err)
	}
	f.db.Close()
	if err := f.svc.Reload(context.Background()); err == nil {
		t.Fatal("reload on a closed store succeeded")
	}
	// Within MaxStale the last loaded state still decides...
	f.clock.Advance(policy.DefaultMaxStale / 2)
	if d, err := f.svc.Decide(context.Background(), req); err != nil || !d.Allowed {
		t.Fatalf("shortly after the outage: %+v, %v", d, err)
	}
	// ...then every decision is a deny with an error.
	f.clock.Advance(policy.DefaultMaxStale)
	d, err := f.svc.Decide(context.Background(), req)
	if !errors.Is(err, fault.Unavailable) || d.Allowed {
		t.Fatalf("long after the outage: %+v, %v", d, err)
	}
}

func TestAuditLogOutageRefusesChanges(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	files, _ := policy.LoadDir(examples + "/live")
	svc, err := policy.New(context.Background(), policy.Config{Store: f.db, Audit: failingRecorder{}, TrustDomain: td,
		Clock: f.clock, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Apply(context.Background(), operator, files, false, ""); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("apply without an audit log: %v", err)
	}
	if vs, _, _ := svc.Versions(context.Background()); len(vs) != 0 {
		t.Fatalf("a version was stored without its audit record")
	}
}

type failingRecorder struct{}

func (failingRecorder) Record(context.Context, audit.Event) (audit.Event, error) {
	return audit.Event{}, audit.ErrUnavailable
}

// Decisions run concurrently with applies and reloads; each sees one whole
// version (run with -race).
func TestConcurrentDecisionsDuringApplies(t *testing.T) {
	f := newFixture(t, storetest.Backends()[0])
	ctx := context.Background()
	if v := f.apply(examples+"/live", false); v.Number != 1 {
		t.Fatalf("first version is %d", v.Number)
	}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				d, err := f.svc.Decide(ctx, callTool(agentUID("alpha"), "wiki", "search", nil))
				if err != nil {
					errs <- err
					return
				}
				// wiki is denied by the live set and allowed by the
				// candidate, applied alternately as even versions:
				// never a mix of the two.
				if d.Allowed != (d.Version%2 == 0) {
					errs <- fmt.Errorf("decision %+v mixes versions", d)
					return
				}
			}
		}()
	}
	for i := 0; i < 6; i++ {
		dir := examples + "/live"
		if i%2 == 0 {
			dir = examples + "/candidate"
		}
		f.apply(dir, false)
	}
	close(stop)
	for g := 0; g < 4; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
