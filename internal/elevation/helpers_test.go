package elevation_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

var (
	td = spiffeid.RequireTrustDomainFromString("bulkhead.local")
	t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
)

// repo finds a file of the repository.
func repo(path string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", path)
}

func readRepo(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(repo(path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flakyRecorder is the audit log, failing on demand.
type flakyRecorder struct {
	log  *audit.Log
	fail atomic.Bool
}

func (r *flakyRecorder) Record(ctx context.Context, ev audit.Event) (audit.Event, error) {
	if r.fail.Load() {
		return audit.Event{}, audit.ErrUnavailable
	}
	return r.log.Record(ctx, ev)
}

// env is an elevation service on a real SQLite store with the example
// policies, tool catalog and manifest, a fake clock, and principals.
type env struct {
	t     *testing.T
	db    *store.DB
	clk   *clock.Fake
	rec   *flakyRecorder
	pol   *policy.Service
	svc   *elevation.Service
	alpha peer.Principal // agent with role reader
	beta  peer.Principal // another agent
	alice peer.Principal // operator
	bob   peer.Principal // operator
	gw    peer.Principal // gateway
}

func principal(kind audit.ActorKind, path string) peer.Principal {
	id := spiffeid.RequireFromPath(td, path)
	_, name, _ := peer.Classify(id)
	return peer.Principal{ID: id, Kind: kind, Name: name}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "", t.TempDir(), storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, db: db, clk: clock.NewFake(t0)}
	logger := storetest.Logger(t)
	e.rec = &flakyRecorder{log: audit.New(db, e.clk, logger)}
	e.pol, err = policy.New(ctx, policy.Config{Store: db, Audit: e.rec, TrustDomain: td, Clock: e.clk, Logger: logger, Managed: db})
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = elevation.New(elevation.Config{Store: db, Audit: e.rec, Policies: e.pol, Catalog: e.pol, Clock: e.clk, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	e.alpha = principal(audit.ActorAgent, "/agent/alpha")
	e.beta = principal(audit.ActorAgent, "/agent/beta")
	e.alice = principal(audit.ActorOperator, "/operator/alice")
	e.bob = principal(audit.ActorOperator, "/operator/bob")
	e.gw = principal(audit.ActorWorkload, "/bulkhead/gateway/default")
	for _, a := range []string{"alpha", "beta"} {
		if err := db.CreateAgent(ctx, identity.Agent{Name: a, SPIFFEID: "spiffe://bulkhead.local/agent/" + a, Status: identity.StatusActive,
			SVIDTTL: time.Hour, CreatedAt: t0, CreatedBy: "test", UpdatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.pol.AddRole(ctx, audit.Actor{Kind: audit.ActorSystem}, "alpha", "reader"); err != nil {
		t.Fatal(err)
	}
	var files []policy.File
	for _, f := range []string{"guardrails.cedar", "roles.cedar"} {
		files = append(files, policy.File{Name: f, Content: string(readRepo(t, "examples/policies/live/"+f))})
	}
	if _, err := e.pol.Apply(ctx, e.alice.Actor(), files, false, "examples"); err != nil {
		t.Fatal(err)
	}
	cat, err := policy.ParseCatalog("tools.yaml", readRepo(t, "examples/policies/tools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pol.ApplyCatalog(ctx, e.alice.Actor(), cat); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ApplyManifest(ctx, e.alice, readRepo(t, "examples/manifests/report-writer.yaml")); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) start(p peer.Principal) elevation.Task {
	e.t.Helper()
	task, err := e.svc.StartTask(context.Background(), p, "report-writer", "weekly report")
	if err != nil {
		e.t.Fatal(err)
	}
	return task
}

func (e *env) request(p peer.Principal, task, trigger string) elevation.Elevation {
	e.t.Helper()
	el, err := e.svc.Request(context.Background(), p, task, trigger, "the weekly report is due")
	if err != nil {
		e.t.Fatal(err)
	}
	return el
}

func (e *env) approve(p peer.Principal, el elevation.Elevation) (elevation.Elevation, error) {
	return e.svc.Approve(context.Background(), p, el.ID, elevation.Binding{Elevation: el.ID, Task: el.Task}, "looks right")
}

// events returns the committed events of action.
func (e *env) events(action string) []audit.Event {
	e.t.Helper()
	rows, err := e.db.Events(context.Background(), audit.Query{AfterSeq: -1, Actions: []string{action}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []audit.Event
	for _, r := range rows {
		ev, err := audit.EventFromRow(r)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// lastEvent returns the last event of action, which must exist.
func (e *env) lastEvent(action string) audit.Event {
	e.t.Helper()
	evs := e.events(action)
	if len(evs) == 0 {
		e.t.Fatalf("no %s event", action)
	}
	return evs[len(evs)-1]
}

// wantRefusal checks err wraps kind and that the last record of action
// is a denial mentioning why.
func (e *env) wantRefusal(err, kind error, action, why string) audit.Event {
	e.t.Helper()
	if !errors.Is(err, kind) {
		e.t.Fatalf("got %v, want %v", err, kind)
	}
	ev := e.lastEvent(action)
	if ev.Decision != audit.Deny || !strings.Contains(strings.Join(ev.Reasons, "; "), why) {
		e.t.Fatalf("last %s record = %s %v, want a denial saying %q", action, ev.Decision, ev.Reasons, why)
	}
	return ev
}

// decide asks the PDP, as the gateway would for task's state.
func (e *env) decide(agent peer.Principal, task *elevation.Task, grants []string, tool string, input string) policy.Decision {
	e.t.Helper()
	in, err := policy.InputFromJSON([]byte(input))
	if err != nil {
		e.t.Fatal(err)
	}
	server, name, _ := strings.Cut(tool, "/")
	c := policy.Context{Input: in, Grants: grants}
	if task != nil {
		c.Task, c.Manifest, c.Tainted = task.ID, task.Manifest, task.Tainted
	}
	d, err := e.pol.Decide(context.Background(), policy.Request{Principal: policy.Agent(agent.ID), Action: policy.Action(policy.ActionCallTool),
		Resource: policy.Tool(server, name), Context: c})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}
