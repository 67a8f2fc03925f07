package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// hostsDecider allows connect to the Host resources it lists.
type hostsDecider map[string]bool

func (h hostsDecider) Decide(_ context.Context, q Decision) (policy.Decision, error) {
	return policy.Decision{ID: "d-" + string(q.Resource.ID), Allowed: h[string(q.Resource.ID)], Version: 1}, nil
}

// dnsStub is a sandbox's DNS stub served by a gateway whose policy lets
// alpha connect to tool/api.example.com:443 (listed, with
// tool/blocked.example.com:443, which the policy does not allow), and
// whose resolver knows api.example.com.
type dnsStub struct {
	g     *Gateway
	p     *egressProxy
	rec   *keptRecorder
	tasks *fakeTasks
}

func newDNSStub(t testing.TB) *dnsStub {
	return newDNSStubWith(t, hostsDecider{"tool/api.example.com:443": true})
}

// newDNSStubWith is newDNSStub deciding with dec.
func newDNSStubWith(t testing.TB, dec Decider) *dnsStub {
	rec := &keptRecorder{added: make(chan audit.Event, 64)}
	tasks := &fakeTasks{state: TaskState{ID: "task-1", Agent: "spiffe://bulkhead.local/agent/alpha", Open: true}}
	g := egressGateway(t, dec, rec, tasks)
	g.lookup = func(_ context.Context, network, host string) ([]netip.Addr, error) {
		if host != "api.example.com" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		if network == "ip6" {
			return []netip.Addr{netip.MustParseAddr("2001:db8::7")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil
	}
	p := &egressProxy{g: g, server: "tool", session: "s1", answered: map[netip.Addr]string{},
		egressConfig: egressConfig{allowed: []string{"api.example.com:443", "blocked.example.com:443"}}}
	return &dnsStub{g: g, p: p, rec: rec, tasks: tasks}
}

// ask sends one question and parses the answer.
func (s *dnsStub) ask(t *testing.T, name string, qtype dnsmessage.Type) (dnsmessage.RCode, []string) {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x4242, RecursionDesired: true})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	resp := s.p.answerDNS(q)
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("%s: the stub's answer does not parse: %v", name, err)
	}
	if m.ID != 0x4242 || !m.Response || len(m.Questions) != 1 {
		t.Fatalf("%s: answer %+v", name, m.Header)
	}
	var addrs []string
	for _, a := range m.Answers {
		switch r := a.Body.(type) {
		case *dnsmessage.AResource:
			addrs = append(addrs, netip.AddrFrom4(r.A).String())
		case *dnsmessage.AAAAResource:
			addrs = append(addrs, netip.AddrFrom16(r.AAAA).String())
		}
	}
	return m.RCode, addrs
}

func TestDNSStubAnswersOnlyNamesThePolicyAllows(t *testing.T) {
	cases := []struct {
		name     string
		qtype    dnsmessage.Type
		rcode    dnsmessage.RCode
		addrs    string
		recorded string // the refusal's reason, if one is recorded
	}{
		{"api.example.com.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "[203.0.113.7]", ""},
		{"API.Example.com.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, "[2001:db8::7]", ""},
		{"api.example.com.", dnsmessage.TypeTXT, dnsmessage.RCodeSuccess, "[]", ""},
		{"localhost.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "[127.0.0.1]", ""},
		// Listed, but the policy allows no connection to it.
		{"blocked.example.com.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "[]", "the policy allows no connection to blocked.example.com"},
		// Exfiltration through a name's labels.
		{"c2VjcmV0LWtleQ.attacker.example.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "[]", "is not in the server's sandbox egress list"},
		{"c2VjcmV0LWtleQ.attacker.example.", dnsmessage.TypeTXT, dnsmessage.RCodeNameError, "[]", "is not in the server's sandbox egress list"},
	}
	for _, c := range cases {
		t.Run(c.name+c.qtype.String(), func(t *testing.T) {
			s := newDNSStub(t)
			rcode, addrs := s.ask(t, c.name, c.qtype)
			if rcode != c.rcode || fmt.Sprint(addrs) != c.addrs && !(c.addrs == "[]" && addrs == nil) {
				t.Fatalf("%s %s: %v %v, want %v %s", c.name, c.qtype, rcode, addrs, c.rcode, c.addrs)
			}
			if c.recorded == "" {
				if len(s.rec.added) != 0 {
					t.Fatalf("an answer was recorded: %+v", <-s.rec.added)
				}
				return
			}
			ev := <-s.rec.added
			if ev.Action != ActionResolve || ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" ||
				ev.Task != "task-1" || !strings.Contains(ev.Reasons[0], c.recorded) {
				t.Fatalf("refusal record %+v", ev)
			}
			s.tasks.mu.Lock()
			defer s.tasks.mu.Unlock()
			if len(s.tasks.suspects) != 1 || !strings.Contains(s.tasks.suspects[0], "refused the name") {
				t.Fatalf("the task was not tainted: %v", s.tasks.suspects)
			}
		})
	}
}

// countingDecider counts its decisions; err fails them.
type countingDecider struct {
	Decider
	n   atomic.Int64
	err error
}

func (c *countingDecider) Decide(ctx context.Context, q Decision) (policy.Decision, error) {
	c.n.Add(1)
	if c.err != nil {
		return policy.Decision{}, c.err
	}
	return c.Decider.Decide(ctx, q)
}

// A resolver asks for A and AAAA, and again: one decision per name for the
// answer's lifetime, refusals included.
func TestDNSVerdictsAreKeptForTheAnswersLifetime(t *testing.T) {
	dec := &countingDecider{Decider: hostsDecider{"tool/api.example.com:443": true}}
	s := newDNSStubWith(t, dec)
	for _, q := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeA} {
		if rcode, _ := s.ask(t, "api.example.com.", q); rcode != dnsmessage.RCodeSuccess {
			t.Fatalf("%v: %v", q, rcode)
		}
		if rcode, _ := s.ask(t, "blocked.example.com.", q); rcode != dnsmessage.RCodeNameError {
			t.Fatalf("%v: %v", q, rcode)
		}
	}
	if n := dec.n.Load(); n != 2 {
		t.Fatalf("%d decisions for two names asked three times", n)
	}
}

// With no decision to be had (the PDP unreachable), a name is neither
// answered nor refused: SERVFAIL, nothing recorded, the task untainted.
func TestDNSWithoutADecisionFailsTheLookup(t *testing.T) {
	s := newDNSStubWith(t, &countingDecider{err: errors.New("control plane unreachable")})
	if rcode, addrs := s.ask(t, "api.example.com.", dnsmessage.TypeA); rcode != dnsmessage.RCodeServerFailure || len(addrs) != 0 {
		t.Fatalf("%v %v", rcode, addrs)
	}
	if len(s.rec.added) != 0 {
		t.Fatalf("recorded: %+v", <-s.rec.added)
	}
	s.tasks.mu.Lock()
	defer s.tasks.mu.Unlock()
	if len(s.tasks.suspects) != 0 {
		t.Fatalf("tainted: %v", s.tasks.suspects)
	}
}

// A CONNECT to an address the stub gave out is decided as one to the
// name it was given for; other addresses stay themselves.
func TestDNSAnswersNameTheirAddresses(t *testing.T) {
	s := newDNSStub(t)
	if got := s.p.named("203.0.113.7:443"); got != "203.0.113.7:443" {
		t.Fatalf("before the answer: %s", got)
	}
	s.ask(t, "api.example.com.", dnsmessage.TypeA)
	s.ask(t, "api.example.com.", dnsmessage.TypeAAAA)
	for addr, want := range map[string]string{"203.0.113.7:443": "api.example.com:443", "[2001:db8::7]:443": "api.example.com:443",
		"198.51.100.1:443": "198.51.100.1:443", "api.example.com:443": "api.example.com:443"} {
		if got := s.p.named(addr); got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}
	if c, why := s.p.decide(s.p.named("203.0.113.7:443")); c == nil || why != "" {
		t.Fatalf("the answered address was refused: %q", why)
	}
}

// A process asking for names in a loop cannot fill the audit log: the
// first refusals are recorded, then one record says no more will be.
func TestDNSRefusalsAreBounded(t *testing.T) {
	s := newDNSStub(t)
	for i := range 3 * dnsRefusalsRecorded {
		if rcode, _ := s.ask(t, fmt.Sprintf("chunk%d.attacker.example.", i), dnsmessage.TypeA); rcode != dnsmessage.RCodeNameError {
			t.Fatalf("chunk %d: %v", i, rcode)
		}
	}
	if n := len(s.rec.added); n != dnsRefusalsRecorded+1 {
		t.Fatalf("%d refusals recorded, want %d", n, dnsRefusalsRecorded+1)
	}
	var last audit.Event
	for len(s.rec.added) > 0 {
		last = <-s.rec.added
	}
	if !strings.Contains(last.Reasons[0], "no more are recorded") {
		t.Fatalf("the last record: %+v", last)
	}
}

// Hostile packets: responses, several questions, other opcodes, garbage.
// Each gets a well-formed error or nothing, and nothing is resolved.
func TestDNSStubRefusesMalformedQueries(t *testing.T) {
	s := newDNSStub(t)
	two := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7})
	_ = two.StartQuestions()
	for _, n := range []string{"api.example.com.", "x.attacker.example."} {
		_ = two.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(n), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	}
	twoQ, _ := two.Finish()
	resp := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true})
	respQ, _ := resp.Finish()
	for _, c := range []struct {
		name  string
		msg   []byte
		rcode dnsmessage.RCode
		none  bool
	}{
		{"garbage", []byte{1, 2, 3}, 0, true},
		{"a response", respQ, 0, true},
		{"two questions", twoQ, dnsmessage.RCodeFormatError, false},
	} {
		out := s.p.answerDNS(c.msg)
		if c.none {
			if out != nil {
				t.Errorf("%s: answered", c.name)
			}
			continue
		}
		var m dnsmessage.Message
		if err := m.Unpack(out); err != nil || m.RCode != c.rcode || len(m.Answers) != 0 {
			t.Errorf("%s: %v %+v", c.name, err, m)
		}
	}
}

func FuzzDNSStub(f *testing.F) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, _ := b.Finish()
	f.Add(q)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	s := newDNSStub(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := s.p.answerDNS(msg)
		if out == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(out); err != nil {
			t.Fatalf("the stub's answer does not parse: %v", err)
		}
		for _, a := range m.Answers {
			if !strings.EqualFold(a.Header.Name.String(), "api.example.com.") && !strings.HasSuffix(strings.ToLower(a.Header.Name.String()), "localhost.") {
				t.Fatalf("answered %s", a.Header.Name)
			}
		}
		for len(s.rec.added) > 0 {
			<-s.rec.added
		}
	})
}
