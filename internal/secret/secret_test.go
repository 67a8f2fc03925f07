package secret_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/secret"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// recorder is a fake audit log that keeps what it commits and can be made
// to fail.
type recorder struct {
	mu   sync.Mutex
	evs  []audit.Event
	fail bool
}

func (r *recorder) Record(_ context.Context, ev audit.Event) (audit.Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return audit.Event{}, audit.ErrUnavailable
	}
	ev.Seq = int64(len(r.evs))
	r.evs = append(r.evs, ev)
	return ev, nil
}

func (r *recorder) events() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.evs...)
}

func (r *recorder) last() audit.Event {
	evs := r.events()
	if len(evs) == 0 {
		return audit.Event{}
	}
	return evs[len(evs)-1]
}

type fixture struct {
	svc  *secret.Service
	db   *store.DB
	rec  *recorder
	logs *bytes.Buffer
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	db := storetest.Backends()[0].Open(t) // SQLite; the conformance suite covers PostgreSQL
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	logs := &bytes.Buffer{}
	svc, err := secret.New(secret.Config{Store: db, Box: box, Audit: rec, Clock: clock.NewFake(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{svc: svc, db: db, rec: rec, logs: logs}
}

var (
	operator = audit.Actor{Kind: audit.ActorOperator, ID: "spiffe://bulkhead.local/operator/admin"}
	td       = spiffeid.RequireTrustDomainFromString("bulkhead.local")
)

func principal(t testing.TB, path string) peer.Principal {
	t.Helper()
	id := spiffeid.RequireFromPath(td, path)
	kind, name, err := peer.Classify(id)
	if err != nil {
		t.Fatal(err)
	}
	return peer.Principal{ID: id, Kind: kind, Name: name, Cert: &x509.Certificate{}}
}

func TestNewRequiresEveryDependency(t *testing.T) {
	if _, err := secret.New(secret.Config{}); err == nil {
		t.Fatal("built a service without dependencies")
	}
}

func TestValidateName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"files-token", true},
		{"a", true},
		{"github.pat_1", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-x", false},
		{"Files", false},
		{"a/b", false},
		{"a b", false},
		{"a\nb", false},
		{"..", false},
		{"é", false},
	}
	for _, c := range cases {
		err := secret.ValidateName(c.name)
		if (err == nil) != c.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, fault.Invalid) {
			t.Errorf("ValidateName(%q) = %v, want fault.Invalid", c.name, err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ValidateName(%q): message spans lines: %q", c.name, err)
		}
	}
}

func TestSetRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		name  string
		by    audit.Actor
		value []byte
		want  error
	}{
		{"bad-name!", operator, []byte("v"), fault.Invalid},
		{"ok", operator, nil, fault.Invalid},
		{"ok", operator, make([]byte, secret.MaxValueSize+1), fault.TooLarge},
		{"ok", audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://bulkhead.local/agent/alpha"}, []byte("v"), fault.Forbidden},
		{"ok", audit.Actor{Kind: audit.ActorWorkload, ID: "spiffe://bulkhead.local/bulkhead/gateway/gw"}, []byte("v"), fault.Forbidden},
	}
	for _, c := range cases {
		if _, err := f.svc.Set(ctx, c.by, c.name, c.value); !errors.Is(err, c.want) {
			t.Errorf("Set(%s, %q, %d bytes) = %v, want %v", c.by, c.name, len(c.value), err, c.want)
		}
	}
	if list, _ := f.svc.List(ctx); len(list) != 0 {
		t.Fatalf("refused sets stored %+v", list)
	}
	if m, err := f.svc.Set(ctx, operator, "ok", make([]byte, secret.MaxValueSize)); err != nil || m.Version != 1 {
		t.Fatalf("a value at the limit: %+v %v", m, err)
	}
}

func TestSetRecordsFirstAndFailsClosed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.rec.fail = true
	if _, err := f.svc.Set(ctx, operator, "files-token", []byte("v1")); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("set without an audit log: %v, want unavailable", err)
	}
	if head, _, _ := f.db.SecretHead(ctx, "files-token"); head.Version != 0 {
		t.Fatalf("a set whose record failed was stored: %+v", head)
	}
	f.rec.fail = false
	m, err := f.svc.Set(ctx, operator, "files-token", []byte("v1"))
	if err != nil || m.Version != 1 || m.UpdatedBy != operator.ID {
		t.Fatalf("set = %+v, %v", m, err)
	}
	ev := f.rec.last()
	if ev.Action != secret.ActionSet || ev.Decision != audit.Allow || ev.Target != "secret:files-token" || ev.Actor != operator ||
		ev.Detail["version"] != "1" {
		t.Fatalf("record = %+v", ev)
	}
	// Deleting and revealing fail closed the same way.
	f.rec.fail = true
	if err := f.svc.Delete(ctx, operator, "files-token"); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("delete without an audit log: %v", err)
	}
	if _, err := f.svc.Reveal(ctx, principal(t, "/bulkhead/gateway/gw"), "files-token"); !errors.Is(err, fault.Unavailable) {
		t.Fatalf("reveal without an audit log: %v", err)
	}
	f.rec.fail = false
	if _, live, _ := f.db.SecretHead(ctx, "files-token"); !live {
		t.Fatal("a delete whose record failed took effect")
	}
}

func TestRevealOnlyToGateways(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	value := []byte("sk-upstream-3f9a1c")
	if _, err := f.svc.Set(ctx, operator, "files-token", value); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		ok   bool
	}{
		{"/bulkhead/gateway/gw1", true},
		{"/bulkhead/server", false},        // the control plane's own serving identity
		{"/bulkhead/connect/alpha", false}, // a component that runs beside agents
		{"/bulkhead/gatewayx/gw1", false},  // a lookalike kind
		{"/bulkhead/gateway", false},       // a kind without an instance
		{"/operator/admin", false},         // operators replace, never read back
		{"/agent/alpha", false},            // agents never see upstream credentials
		{"/agent/gateway", false},          // whatever its name
		{"/agent/alpha/sub/bulkhead", false},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			p := principal(t, c.path)
			got, err := f.svc.Reveal(ctx, p, "files-token")
			ev := f.rec.last()
			if ev.Action != secret.ActionReveal || ev.Actor.ID != p.ID.String() || ev.Target != "secret:files-token" {
				t.Fatalf("record = %+v", ev)
			}
			if !c.ok {
				if !errors.Is(err, fault.Forbidden) || got != nil || ev.Decision != audit.Deny {
					t.Fatalf("Reveal = %q, %v; record %s", got, err, ev.Decision)
				}
				return
			}
			if err != nil || !bytes.Equal(got, value) || ev.Decision != audit.Allow || ev.Detail["version"] != "1" {
				t.Fatalf("Reveal = %q, %v; record %+v", got, err, ev)
			}
		})
	}
	if _, err := f.svc.Reveal(ctx, principal(t, "/bulkhead/gateway/gw1"), "nope"); !errors.Is(err, fault.NotFound) || f.rec.last().Decision != audit.Deny {
		t.Fatalf("reveal of a missing secret: %v, recorded %+v", err, f.rec.last())
	}
	assertNoValue(t, f, value)
}

func TestVersionsContinueAcrossDeletion(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	gw := principal(t, "/bulkhead/gateway/gw1")
	for i, v := range []string{"one", "two"} {
		if m, err := f.svc.Set(ctx, operator, "k", []byte(v)); err != nil || m.Version != int64(i+1) {
			t.Fatalf("set %s = %+v, %v", v, m, err)
		}
	}
	if ev := f.rec.last(); ev.Detail["replaces_version"] != "1" {
		t.Fatalf("replacement record = %+v", ev)
	}
	if r, err := f.svc.RevealVersion(ctx, gw, "k"); err != nil || string(r.Value) != "two" || r.Version != 2 {
		t.Fatalf("reveal = %+v, %v", r, err)
	}
	if err := f.svc.Delete(ctx, operator, "k"); err != nil {
		t.Fatal(err)
	}
	if ev := f.rec.last(); ev.Action != secret.ActionDelete || ev.Detail["version"] != "2" || ev.Decision != audit.Allow {
		t.Fatalf("delete record = %+v", ev)
	}
	if err := f.svc.Delete(ctx, operator, "k"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := f.svc.Reveal(ctx, gw, "k"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("reveal after delete: %v", err)
	}
	if m, err := f.svc.Set(ctx, operator, "k", []byte("three")); err != nil || m.Version != 3 {
		t.Fatalf("set after delete = %+v, %v; the version must not restart", m, err)
	}
}

// A copy of the database must not be enough to read, move or roll back a
// secret: each sealed value opens only under its own name and version.
func TestSealedValuesAreBoundToNameAndVersion(t *testing.T) {
	ctx := context.Background()
	gw := principal(t, "/bulkhead/gateway/gw1")
	sealed := func(f fixture, name string) []byte {
		r, err := f.db.GetSecret(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return r.Sealed
	}
	write := func(f fixture, name string, b []byte) {
		if _, err := f.db.SQL().Exec(`UPDATE secrets SET sealed = ? WHERE name = ?`, b, name); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		tamper func(f fixture)
	}{
		{"a flipped bit", func(f fixture) {
			b := sealed(f, "a")
			b[len(b)-1] ^= 1
			write(f, "a", b)
		}},
		{"another name's value", func(f fixture) { write(f, "a", sealed(f, "b")) }},
		{"an older version of the same name", func(f fixture) {
			old := sealed(f, "a")
			if _, err := f.svc.Set(ctx, operator, "a", []byte("value-a-2")); err != nil {
				t.Fatal(err)
			}
			write(f, "a", old)
		}},
		{"a truncated value", func(f fixture) { write(f, "a", sealed(f, "a")[:5]) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			for _, n := range []string{"a", "b"} {
				if _, err := f.svc.Set(ctx, operator, n, []byte("value-"+n)); err != nil {
					t.Fatal(err)
				}
			}
			c.tamper(f)
			got, err := f.svc.Reveal(ctx, gw, "a")
			if err == nil || got != nil {
				t.Fatalf("a tampered value opened: %q", got)
			}
			for _, k := range []error{fault.Invalid, fault.Forbidden, fault.NotFound, fault.Unavailable} {
				if errors.Is(err, k) {
					t.Fatalf("tampering reported as %v; want an internal error", k)
				}
			}
			evs := f.rec.events()
			allowed, failed := evs[len(evs)-2], evs[len(evs)-1]
			if allowed.Decision != audit.Allow || failed.Decision != audit.Failed || failed.Action != secret.ActionReveal ||
				failed.Detail["allowed_seq"] == "" {
				t.Fatalf("records = %+v then %+v; want the reveal recorded, then its failure", allowed, failed)
			}
		})
	}
}

func TestConcurrentSetsKeepEveryVersion(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.svc.Set(ctx, operator, "k", []byte{byte('a' + i)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, fault.Conflict):
			t.Fatalf("racing set: %v", err)
		}
	}
	head, _, _ := f.db.SecretHead(ctx, "k")
	if wins == 0 || head.Version != int64(wins) {
		t.Fatalf("%d sets won but the version is %d", wins, head.Version)
	}
	// Each loser's allowed record is followed by a failure record.
	allowed, failed := 0, 0
	for _, ev := range f.rec.events() {
		switch ev.Decision {
		case audit.Allow:
			allowed++
		case audit.Failed:
			failed++
		}
	}
	if allowed != n || failed != n-wins {
		t.Fatalf("%d allowed and %d failed records for %d sets of which %d won", allowed, failed, n, wins)
	}
}

// assertNoValue checks that value appears in no record and no log line, in
// any common encoding.
func assertNoValue(t *testing.T, f fixture, value []byte) {
	t.Helper()
	var all bytes.Buffer
	for _, ev := range f.rec.events() {
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	all.Write(f.logs.Bytes())
	for _, enc := range encodings(value) {
		if bytes.Contains(all.Bytes(), []byte(enc)) {
			t.Fatalf("the secret value (as %q) appears in the audit records or logs", enc)
		}
	}
}

func encodings(v []byte) []string {
	return []string{string(v), base64.StdEncoding.EncodeToString(v), base64.RawURLEncoding.EncodeToString(v), hex.EncodeToString(v),
		audit.Digest(v)[len("sha256:"):]}
}

// Whatever the input, an error never echoes the value (only a name the
// caller chose, which is not secret).
func FuzzSetNeverEchoesValue(f *testing.F) {
	f.Add("files-token", []byte("sk-live-123456"))
	f.Add("Bad Name", []byte("sk-live-123456"))
	f.Add("", []byte{})
	f.Add("x", bytes.Repeat([]byte("a"), secret.MaxValueSize+1))
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, name string, value []byte) {
		_, err := fx.svc.Set(context.Background(), operator, name, value)
		if err == nil || len(value) < 8 || strings.Contains(name, string(value)) {
			return
		}
		if strings.Contains(err.Error(), string(value)) {
			t.Fatalf("error echoes the value: %v", err)
		}
	})
}
