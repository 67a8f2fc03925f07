package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// A sandbox with egress through the proxy resolves names only through a
// DNS stub inside it (sandbox.DNSAddr), which the gateway serves here. A
// name is answered only when the server's sandbox.egress lists it and the
// policy lets the session's agent connect to it on one of the listed
// ports; the gateway then resolves it itself and remembers the addresses
// it gave out, so that a CONNECT to one of them is decided as one to the
// name. Every other question is answered NXDOMAIN and never leaves the
// gateway — a name is a channel out (DNS exfiltration), so the refusal is
// recorded (gateway.resolve) and taints the task, like a refused
// connection. Answers are not recorded: the connection that follows is.
// A verdict is kept for the answer's TTL, so a resolver asking again is
// not a new decision; a question no decision could be made for is
// answered SERVFAIL, neither refused nor held against the task.

// ActionResolve records a name a sandbox's DNS stub refused.
const ActionResolve = "gateway.resolve"

const (
	// dnsWorkers bounds the questions one stub answers at a time; more
	// are dropped, and resolvers ask again.
	dnsWorkers = 8
	// dnsRefusalsRecorded bounds the refusals recorded per sandbox: a
	// process that asks for names in a loop cannot fill the audit log.
	// The one past it is recorded as the end of the record.
	dnsRefusalsRecorded = 16
	// dnsTTL is the lifetime of an answer, in seconds: short, so that a
	// policy change reaches the next lookup.
	dnsTTL = 30
	// dnsMaxAnswers bounds the addresses in one answer, which keeps it
	// within the 512 bytes of plain UDP DNS (TCP is not served).
	dnsMaxAnswers = 8
	// dnsMaxVerdicts bounds the verdicts a stub keeps.
	dnsMaxVerdicts = 256
)

// dnsVerdict is why a name may not be answered ("": it may), as decided
// at a time.
type dnsVerdict struct {
	at  time.Time
	why string
}

// serveDNS answers the questions on pc until it is closed.
func (p *egressProxy) serveDNS(pc net.PacketConn) {
	sem := make(chan struct{}, dnsWorkers)
	for {
		buf := make([]byte, 512)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			// Wait for the answers under way before the socket goes.
			for range dnsWorkers {
				sem <- struct{}{}
			}
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			continue
		}
		go func() {
			defer func() { <-sem }()
			if resp := p.answerDNS(buf[:n]); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}()
	}
}

// answerDNS answers one DNS query, or returns nil for what is not one.
func (p *egressProxy) answerDNS(msg []byte) []byte {
	var parser dnsmessage.Parser
	h, err := parser.Start(msg)
	if err != nil || h.Response {
		return nil
	}
	qs, err := parser.AllQuestions()
	if err != nil || len(qs) != 1 || h.OpCode != 0 {
		rcode := dnsmessage.RCodeFormatError
		if err == nil && h.OpCode != 0 {
			rcode = dnsmessage.RCodeNotImplemented
		}
		return dnsReply(h, nil, rcode, nil)
	}
	q := qs[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		// The sandbox's own loopback: nothing leaves.
		return dnsReply(h, &q, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()})
	}
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	defer cancel()
	why, failed := p.resolvable(ctx, name)
	switch {
	case failed:
		// Not a refusal: no decision could be made. The stub fails the
		// lookup (the resolver may ask again) and holds nothing against
		// the task.
		p.g.logger.Warn("sandbox dns: no decision for a name; answering SERVFAIL", "server", p.server, "name", name, "why", why)
		return dnsReply(h, &q, dnsmessage.RCodeServerFailure, nil)
	case why != "":
		p.refuseName(ctx, name, q.Type.String(), why)
		return dnsReply(h, &q, dnsmessage.RCodeNameError, nil)
	}
	network := map[dnsmessage.Type]string{dnsmessage.TypeA: "ip4", dnsmessage.TypeAAAA: "ip6"}[q.Type]
	if network == "" {
		return dnsReply(h, &q, dnsmessage.RCodeSuccess, nil) // a name without records of that type
	}
	addrs, err := p.g.lookup(ctx, network, name)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return dnsReply(h, &q, dnsmessage.RCodeNameError, nil)
		}
		if errors.As(err, &dnsErr) && strings.Contains(dnsErr.Err, "no suitable address") {
			return dnsReply(h, &q, dnsmessage.RCodeSuccess, nil)
		}
		p.g.logger.Warn("sandbox dns: lookup failed", "server", p.server, "name", name, "err", err)
		return dnsReply(h, &q, dnsmessage.RCodeServerFailure, nil)
	}
	if len(addrs) > dnsMaxAnswers {
		addrs = addrs[:dnsMaxAnswers]
	}
	p.mu.Lock()
	for _, a := range addrs {
		p.answered[a.Unmap()] = name
	}
	p.mu.Unlock()
	return dnsReply(h, &q, dnsmessage.RCodeSuccess, addrs)
}

// resolvable says why name may not be answered, or "": the server's
// sandbox must list it with some port, and the policy must let the
// session's agent connect to it on one of those. failed says no decision
// could be made (why says why). Verdicts are kept for dnsTTL.
func (p *egressProxy) resolvable(ctx context.Context, name string) (why string, failed bool) {
	c := p.owner()
	if c == nil {
		return "no agent session owns this process", false
	}
	key := c.id.String() + "\x00" + c.claims.Task + "\x00" + name
	now := p.g.deps.Clock.Now()
	p.mu.Lock()
	v, ok := p.verdicts[key]
	p.mu.Unlock()
	if ok && now.Sub(v.at) < dnsTTL*time.Second && !now.Before(v.at) {
		return v.why, false
	}
	listed := false
	why = "the policy allows no connection to " + name
	for _, dest := range p.allowed {
		host, _, err := net.SplitHostPort(dest)
		if err != nil || host != name {
			continue
		}
		listed = true
		d, _, reasons, failed := p.evaluate(ctx, c, dest)
		if failed {
			return reasons[0], true
		}
		if d.Allowed && len(reasons) == 0 {
			why = ""
			break
		}
	}
	if !listed {
		why = "name " + name + " is not in the server's sandbox egress list"
	}
	p.mu.Lock()
	if p.verdicts == nil || len(p.verdicts) >= dnsMaxVerdicts {
		p.verdicts = map[string]dnsVerdict{}
	}
	p.verdicts[key] = dnsVerdict{at: now, why: why}
	p.mu.Unlock()
	return why, false
}

// refuseName records a refused name (up to dnsRefusalsRecorded per
// sandbox) and taints the task.
func (p *egressProxy) refuseName(ctx context.Context, name, qtype, why string) {
	c := p.owner()
	p.mu.Lock()
	p.refused++
	n := p.refused
	// The first refusal while an agent's session owns the process taints
	// its task, whatever the record cap and earlier orphan refusals.
	taint := c != nil && !p.tainted
	if taint {
		p.tainted = true
	}
	p.mu.Unlock()
	if taint {
		defer p.g.distrust(ctx, c.id.String(), c.claims.Task, p.server, "the sandbox's DNS stub refused the name "+name)
	}
	if n > dnsRefusalsRecorded+1 {
		return
	}
	if len(name) > 255 {
		name = name[:255]
	}
	detail := map[string]string{"gateway": p.g.cfg.Name, "server": p.server, "server_session": p.session, "name": name, "type": qtype}
	if n > dnsRefusalsRecorded {
		why = "more names refused; no more are recorded for this sandbox"
	}
	target := policy.Host(p.server, name).String()
	if c == nil {
		p.recordOrphan(ctx, ActionResolve, target, map[string]string{"name": name, "type": qtype})
		return
	}
	ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: c.id.String()}, Action: ActionResolve, Target: target,
		Decision: audit.Deny, Reasons: []string{why}, Task: c.claims.Task, Detail: detail}
	if _, err := p.g.deps.Audit.Record(ctx, ev); err != nil {
		p.g.logger.Error("could not record a refused name", "server", p.server, "err", err)
	}
}

// dnsReply builds a response to the query h asking q.
func dnsReply(h dnsmessage.Header, q *dnsmessage.Question, rcode dnsmessage.RCode, addrs []netip.Addr) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, Authoritative: true, RCode: rcode})
	b.EnableCompression()
	if q == nil {
		_ = b.StartQuestions()
		msg, _ := b.Finish()
		return msg
	}
	_ = b.StartQuestions()
	_ = b.Question(*q)
	_ = b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
	for _, a := range addrs {
		switch {
		case q.Type == dnsmessage.TypeA && a.Unmap().Is4():
			_ = b.AResource(rh, dnsmessage.AResource{A: a.Unmap().As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6() && !a.Is4In6():
			_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}
