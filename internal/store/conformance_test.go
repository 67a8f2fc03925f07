package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// The conformance suite: every store behaviour the services rely on, run
// against SQLite and PostgreSQL alike.
func TestConformance(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, db *store.DB)
	}{
		{"agents", testAgents},
		{"join tokens are redeemed once", testJoinTokens},
		{"issuing needs an active agent", testIssueNeedsActiveAgent},
		{"revoking an agent revokes its certificates", testRevokeAgent},
		{"revoked certificates omit expired ones", testRevokedCerts},
		{"revoking a tree covers every sub-agent and nothing else", testRevokeTree},
		{"scopes, delegation and thumbprints round-trip", testAgentExtras},
		{"token keys, resources, revocations and assertions", testTokenStore},
		{"audit appends are contiguous", testAuditAppend},
		{"audit appends stay contiguous under concurrency", testAuditConcurrent},
		{"audit appends hash every event into the tree", testAuditTree},
		{"audit checkpoints are kept once per size", testAuditCheckpoints},
		{"audit cursors only move forward", testAuditCursors},
		{"baselines only move forward", testBaselines},
		{"passkeys and their one-time links", testPasskeys},
		{"audit pruning keeps the tree", testAuditPrune},
		{"audit searches filter by subject, decision and time", testAuditSearch},
		{"meta is set once", testMeta},
		{"policy versions are numbered and put in force atomically", testPolicyVersions},
		{"policy state changes under lock", testPolicyStateConcurrent},
		{"roles belong to existing agents", testAgentRoles},
		{"the tool catalog is replaced whole", testToolCatalog},
		{"shadow differences and counts accumulate", testShadowRecords},
		{"secrets are versioned, compare-and-set and tombstoned", testSecretStore},
		{"elevation: manifests, tasks, approvals and atomic grant uses", testElevationStore},
	}
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, b.Open(t)) })
			}
		})
	}
}

func TestReopenKeepsDataAndSkipsAppliedMigrations(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn, dir := b.DSN(t)
			ctx := context.Background()
			db, err := store.Open(ctx, dsn, dir, storetest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			mustCreateAgent(t, db, "alpha")
			db.Close()
			db, err = store.Open(ctx, dsn, dir, storetest.Logger(t))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer db.Close()
			if _, err := db.GetAgent(ctx, "alpha"); err != nil {
				t.Fatalf("agent lost across reopen: %v", err)
			}
		})
	}
}

func TestOpenRejectsUnknownStore(t *testing.T) {
	_, err := store.Open(context.Background(), "mysql://root:secret@x/db", t.TempDir(), storetest.Logger(t))
	if err == nil {
		t.Fatal("opened an unsupported store")
	}
	if got := err.Error(); strings.Contains(got, "secret") {
		t.Fatalf("error leaks the password: %s", got)
	}
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func mustCreateAgent(t *testing.T, db *store.DB, name string) identity.Agent {
	t.Helper()
	a := identity.Agent{Name: name, SPIFFEID: "spiffe://bulkhead.local/agent/" + name, Status: identity.StatusActive,
		SVIDTTL: time.Hour, CreatedAt: t0, CreatedBy: "spiffe://bulkhead.local/operator/admin", UpdatedAt: t0}
	if err := db.CreateAgent(context.Background(), a); err != nil {
		t.Fatalf("create agent %s: %v", name, err)
	}
	return a
}

func cert(agent, serial string, notAfter time.Time) identity.Cert {
	return identity.Cert{Serial: serial, SPIFFEID: "spiffe://bulkhead.local/agent/" + agent, Agent: agent,
		NotBefore: t0, NotAfter: notAfter, IssuedAt: t0, IssuedBy: "test", DER: []byte{0x30, 0x01, 0x02}}
}

func testAgents(t *testing.T, db *store.DB) {
	ctx := context.Background()
	want := mustCreateAgent(t, db, "alpha")
	mustCreateAgent(t, db, "beta")
	got, err := db.GetAgent(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if err := db.CreateAgent(ctx, want); !errors.Is(err, fault.Conflict) {
		t.Fatalf("duplicate create: got %v, want conflict", err)
	}
	if _, err := db.GetAgent(ctx, "nobody"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("missing agent: got %v, want not found", err)
	}
	list, err := db.ListAgents(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Fatalf("list = %v, %v", list, err)
	}
	if err := db.SetAgentStatus(ctx, "beta", identity.StatusDisabled, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if b, _ := db.GetAgent(ctx, "beta"); b.Status != identity.StatusDisabled || !b.UpdatedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("status not updated: %+v", b)
	}
	if err := db.SetAgentStatus(ctx, "nobody", identity.StatusDisabled, t0); !errors.Is(err, fault.NotFound) {
		t.Fatalf("status of missing agent: got %v, want not found", err)
	}
}

func testJoinTokens(t *testing.T, db *store.DB) {
	ctx := context.Background()
	mustCreateAgent(t, db, "alpha")
	tok := identity.JoinToken{Hash: "h1", Agent: "alpha", ExpiresAt: t0.Add(10 * time.Minute), CreatedAt: t0, CreatedBy: "op"}
	if err := db.CreateJoinToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if got, err := db.GetJoinToken(ctx, "h1"); err != nil || got != tok {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if err := db.IssueCert(ctx, cert("alpha", "01", t0.Add(time.Hour)), "h1", t0.Add(time.Minute)); err != nil {
		t.Fatalf("first redemption: %v", err)
	}
	if err := db.IssueCert(ctx, cert("alpha", "02", t0.Add(time.Hour)), "h1", t0.Add(2*time.Minute)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("second redemption: got %v, want conflict", err)
	}
	if _, err := db.GetCert(ctx, "02"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("a refused redemption left a certificate: %v", err)
	}
	if got, _ := db.GetJoinToken(ctx, "h1"); !got.UsedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("used_at = %v", got.UsedAt)
	}
	// An expired token is refused and stays unused.
	exp := identity.JoinToken{Hash: "h2", Agent: "alpha", ExpiresAt: t0.Add(time.Minute), CreatedAt: t0, CreatedBy: "op"}
	if err := db.CreateJoinToken(ctx, exp); err != nil {
		t.Fatal(err)
	}
	if err := db.IssueCert(ctx, cert("alpha", "03", t0.Add(time.Hour)), "h2", t0.Add(time.Minute)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("expired token: got %v, want conflict", err)
	}
	// A token redeems only for its own agent.
	mustCreateAgent(t, db, "beta")
	other := identity.JoinToken{Hash: "h3", Agent: "alpha", ExpiresAt: t0.Add(time.Hour), CreatedAt: t0, CreatedBy: "op"}
	if err := db.CreateJoinToken(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := db.IssueCert(ctx, cert("beta", "04", t0.Add(time.Hour)), "h3", t0); !errors.Is(err, fault.Conflict) {
		t.Fatalf("token of alpha redeemed for beta: %v", err)
	}
	// A component's token: found by the same lookup, redeemed once, and
	// only for its own SPIFFE ID.
	const edge = "spiffe://bulkhead.local/bulkhead/gateway/edge"
	gw := identity.JoinToken{Hash: "h4", Component: edge, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0, CreatedBy: "op"}
	if err := db.CreateJoinToken(ctx, gw); err != nil {
		t.Fatal(err)
	}
	if got, err := db.GetJoinToken(ctx, "h4"); err != nil || got != gw {
		t.Fatalf("get component token = %+v, %v", got, err)
	}
	component := func(id, serial string) identity.Cert {
		c := cert("", serial, t0.Add(time.Hour))
		c.SPIFFEID = id
		return c
	}
	if err := db.IssueCert(ctx, component("spiffe://bulkhead.local/bulkhead/gateway/other", "05"), "h4", t0); !errors.Is(err, fault.Conflict) {
		t.Fatalf("component token redeemed for another identity: %v", err)
	}
	if err := db.IssueCert(ctx, component(edge, "06"), "h4", t0); err != nil {
		t.Fatalf("component token: %v", err)
	}
	if err := db.IssueCert(ctx, component(edge, "07"), "h4", t0); !errors.Is(err, fault.Conflict) {
		t.Fatalf("component token redeemed twice: %v", err)
	}
}

func testIssueNeedsActiveAgent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	mustCreateAgent(t, db, "alpha")
	if err := db.IssueCert(ctx, cert("alpha", "0a", t0.Add(time.Hour)), "", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.IssueCert(ctx, cert("alpha", "0a", t0.Add(time.Hour)), "", t0); !errors.Is(err, fault.Conflict) {
		t.Fatalf("duplicate serial: got %v, want conflict", err)
	}
	if err := db.SetAgentStatus(ctx, "alpha", identity.StatusDisabled, t0); err != nil {
		t.Fatal(err)
	}
	if err := db.IssueCert(ctx, cert("alpha", "0b", t0.Add(time.Hour)), "", t0); !errors.Is(err, fault.Conflict) {
		t.Fatalf("issued to a disabled agent: %v", err)
	}
	if err := db.IssueCert(ctx, cert("ghost", "0c", t0.Add(time.Hour)), "", t0); !errors.Is(err, fault.NotFound) {
		t.Fatalf("issued to an unknown agent: %v", err)
	}
	// Certificates of non-agents (operators, components) have no agent row.
	op := identity.Cert{Serial: "0d", SPIFFEID: "spiffe://bulkhead.local/operator/admin", NotBefore: t0,
		NotAfter: t0.Add(time.Hour), IssuedAt: t0, IssuedBy: "system", DER: []byte{1}}
	if err := db.IssueCert(ctx, op, "", t0); err != nil {
		t.Fatalf("operator certificate: %v", err)
	}
	got, err := db.GetCert(ctx, "0d")
	if err != nil || got.Agent != "" || got.SPIFFEID != op.SPIFFEID || string(got.DER) != string(op.DER) {
		t.Fatalf("operator certificate round trip: %+v, %v", got, err)
	}
}

func testRevokeAgent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	mustCreateAgent(t, db, "alpha")
	mustCreateAgent(t, db, "beta")
	for i, a := range []string{"alpha", "alpha", "beta"} {
		if err := db.IssueCert(ctx, cert(a, fmt.Sprintf("%02x", i+1), t0.Add(time.Hour)), "", t0); err != nil {
			t.Fatal(err)
		}
	}
	at := t0.Add(5 * time.Minute)
	agents, serials, err := db.RevokeTree(ctx, "alpha", true, at, "compromised")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(agents) != "[alpha]" {
		t.Fatalf("revoked agents = %v", agents)
	}
	if fmt.Sprint(serials) != "[01 02]" {
		t.Fatalf("revoked serials = %v", serials)
	}
	a, _ := db.GetAgent(ctx, "alpha")
	if a.Status != identity.StatusRevoked {
		t.Fatalf("agent status = %s", a.Status)
	}
	c, _ := db.GetCert(ctx, "01")
	if !c.Revoked() || !c.RevokedAt.Equal(at) || c.RevokedReason != "compromised" {
		t.Fatalf("certificate not revoked: %+v", c)
	}
	if c, _ := db.GetCert(ctx, "03"); c.Revoked() {
		t.Fatal("revoking alpha revoked beta's certificate")
	}
	// Revoking again covers nothing new; an unknown agent is not found.
	if _, again, err := db.RevokeTree(ctx, "alpha", true, at, "again"); err != nil || len(again) != 0 {
		t.Fatalf("second revoke = %v, %v", again, err)
	}
	if _, _, err := db.RevokeTree(ctx, "nobody", true, at, ""); !errors.Is(err, fault.NotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if list, _ := db.ListCerts(ctx, "alpha"); len(list) != 2 {
		t.Fatalf("ListCerts(alpha) = %d certs", len(list))
	}
}

func testRevokedCerts(t *testing.T, db *store.DB) {
	ctx := context.Background()
	mustCreateAgent(t, db, "alpha")
	if err := db.IssueCert(ctx, cert("alpha", "aa", t0.Add(time.Hour)), "", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.IssueCert(ctx, cert("alpha", "bb", t0.Add(time.Minute)), "", t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.RevokeTree(ctx, "alpha", true, t0, "test"); err != nil {
		t.Fatal(err)
	}
	list, err := db.RevokedCerts(ctx, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Serial != "aa" {
		t.Fatalf("revoked unexpired = %+v, want only aa", list)
	}
}

func row(action string, i int) audit.Row {
	return audit.Row{Time: t0.Add(time.Duration(i) * time.Second), ActorKind: "operator", ActorID: "op",
		Action: action, Target: "t", Decision: "allow", Body: []byte(fmt.Sprintf(`{"i":%d}`, i))}
}

func testAuditAppend(t *testing.T, db *store.DB) {
	ctx := context.Background()
	first, err := db.AppendEvents(ctx, []audit.Row{row("a.x", 0), row("b.y", 1)})
	if err != nil || first != 0 {
		t.Fatalf("first batch at %d, %v", first, err)
	}
	first, err = db.AppendEvents(ctx, []audit.Row{row("a.x", 2)})
	if err != nil || first != 2 {
		t.Fatalf("second batch at %d, %v", first, err)
	}
	all, err := db.Events(ctx, audit.Query{AfterSeq: -1})
	if err != nil || len(all) != 3 {
		t.Fatalf("events = %d, %v", len(all), err)
	}
	for i, r := range all {
		if r.Seq != int64(i) || string(r.Body) != fmt.Sprintf(`{"i":%d}`, i) || !r.Time.Equal(t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("event %d = %+v", i, r)
		}
	}
	ax, err := db.Events(ctx, audit.Query{AfterSeq: 0, Actions: []string{"a.x"}})
	if err != nil || len(ax) != 1 || ax[0].Seq != 2 {
		t.Fatalf("filtered = %+v, %v", ax, err)
	}
	lim, err := db.Events(ctx, audit.Query{AfterSeq: -1, Limit: 2})
	if err != nil || len(lim) != 2 {
		t.Fatalf("limited = %d, %v", len(lim), err)
	}
}

func testAuditConcurrent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	const writers, batches = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				if _, err := db.AppendEvents(ctx, []audit.Row{row("c", w), row("c", b)}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := db.Events(ctx, audit.Query{AfterSeq: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != writers*batches*2 {
		t.Fatalf("got %d events, want %d", len(all), writers*batches*2)
	}
	for i, r := range all {
		if r.Seq != int64(i) {
			t.Fatalf("sequence has a gap or duplicate at %d: %d", i, r.Seq)
		}
	}
}

func testMeta(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if v, err := db.Meta(ctx, "k"); err != nil || v != "" {
		t.Fatalf("unset meta = %q, %v", v, err)
	}
	if v, err := db.SetMetaOnce(ctx, "k", "first"); err != nil || v != "first" {
		t.Fatalf("set = %q, %v", v, err)
	}
	if v, err := db.SetMetaOnce(ctx, "k", "second"); err != nil || v != "first" {
		t.Fatalf("second set = %q, %v; the first value must stay", v, err)
	}
}

func mustCreateSub(t *testing.T, db *store.DB, name, parent, jti string) {
	t.Helper()
	a := identity.Agent{Name: name, SPIFFEID: "spiffe://bulkhead.local/agent/" + name, Status: identity.StatusActive,
		SVIDTTL: time.Minute, CreatedAt: t0, CreatedBy: "spiffe://bulkhead.local/agent/" + parent, UpdatedAt: t0,
		Scopes: []string{"read"}, Parent: parent, DelegatedJTI: jti}
	if err := db.CreateAgent(context.Background(), a); err != nil {
		t.Fatalf("create sub-agent %s: %v", name, err)
	}
}

func testRevokeTree(t *testing.T, db *store.DB) {
	ctx := context.Background()
	// a_b is a name with LIKE's wildcard; a_b's tree must not catch axb.
	for _, n := range []string{"a_b", "axb"} {
		mustCreateAgent(t, db, n)
	}
	mustCreateSub(t, db, "a_b/sub/c1", "a_b", "j1")
	mustCreateSub(t, db, "a_b/sub/c1/sub/d1", "a_b/sub/c1", "j2")
	mustCreateSub(t, db, "axb/sub/c1", "axb", "j3")
	for i, n := range []string{"a_b", "a_b/sub/c1", "a_b/sub/c1/sub/d1", "axb/sub/c1"} {
		if err := db.IssueCert(ctx, cert(n, fmt.Sprintf("%02x", i+1), t0.Add(time.Hour)), "", t0); err != nil {
			t.Fatal(err)
		}
	}
	// Only the subtree: the root stays as it is (a disabled parent).
	agents, serials, err := db.RevokeTree(ctx, "a_b", false, t0, "parent disabled")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(agents) != "[a_b/sub/c1 a_b/sub/c1/sub/d1]" || fmt.Sprint(serials) != "[02 03]" {
		t.Fatalf("subtree revoke: agents %v serials %v", agents, serials)
	}
	for n, want := range map[string]identity.Status{"a_b": identity.StatusActive, "a_b/sub/c1": identity.StatusRevoked,
		"a_b/sub/c1/sub/d1": identity.StatusRevoked, "axb": identity.StatusActive, "axb/sub/c1": identity.StatusActive} {
		if a, _ := db.GetAgent(ctx, n); a.Status != want {
			t.Errorf("%s is %s, want %s", n, a.Status, want)
		}
	}
	agents, serials, err = db.RevokeTree(ctx, "a_b", true, t0, "root revoked")
	if err != nil || fmt.Sprint(agents) != "[a_b]" || fmt.Sprint(serials) != "[01]" {
		t.Fatalf("root revoke: %v %v %v", agents, serials, err)
	}
	if c, _ := db.GetCert(ctx, "04"); c.Revoked() {
		t.Fatal("a name-prefix lookalike's certificate was revoked")
	}
	if got, err := db.AgentsDelegatedBy(ctx, "j2"); err != nil || fmt.Sprint(got) != "[a_b/sub/c1/sub/d1]" {
		t.Fatalf("delegated by j2 = %v, %v", got, err)
	}
}

func testAgentExtras(t *testing.T, db *store.DB) {
	ctx := context.Background()
	mustCreateAgent(t, db, "alpha")
	if err := db.SetAgentScopes(ctx, "alpha", []string{"files:read", "mcp"}, t0); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.GetAgent(ctx, "alpha"); fmt.Sprint(a.Scopes) != "[files:read mcp]" {
		t.Fatalf("scopes = %v", a.Scopes)
	}
	if err := db.SetAgentScopes(ctx, "nobody", nil, t0); !errors.Is(err, fault.NotFound) {
		t.Fatalf("scopes of unknown agent: %v", err)
	}
	c := cert("alpha", "0e", t0.Add(time.Hour))
	c.X5T = "thumb-0e"
	if err := db.IssueCert(ctx, c, "", t0); err != nil {
		t.Fatal(err)
	}
	if got, err := db.GetCertByThumbprint(ctx, "thumb-0e"); err != nil || got.Serial != "0e" {
		t.Fatalf("by thumbprint: %+v %v", got, err)
	}
	if _, err := db.GetCertByThumbprint(ctx, ""); !errors.Is(err, fault.NotFound) {
		t.Fatalf("empty thumbprint matched: %v", err)
	}
}

// A migration that lands after higher-numbered ones (written in parallel)
// is still applied to a database that already ran the higher ones.
func TestMigrationsAppliedOutOfOrder(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn, dir := b.DSN(t)
			ctx := context.Background()
			db, err := store.Open(ctx, dsn, dir, storetest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			// Pretend 005 had not been written yet when this database was
			// migrated past it.
			for _, q := range []string{`DROP TABLE secrets`, `DELETE FROM schema_migrations WHERE version = 5`} {
				if _, err := db.SQL().ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			db.Close()
			db, err = store.Open(ctx, dsn, dir, storetest.Logger(t))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer db.Close()
			if _, err := db.SQL().ExecContext(ctx, `SELECT COUNT(*) FROM secrets`); err != nil {
				t.Fatalf("the missing migration was not applied: %v", err)
			}
		})
	}
}
