package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// The egress proxy serves a sandboxed stdio server's only way out (see
// sandbox.EgressProxy): HTTP CONNECT, and plain HTTP requests in absolute
// form. Each connection is allowed only to a destination the server's
// sandbox.egress lists, only while an agent's session runs the process,
// and only if the policy allows that agent Action::"connect" on
// Host::"SERVER/host:port"; the decision is recorded (gateway.connect)
// before a byte moves.

// ActionEgress records a sandboxed server's outbound connection.
const ActionEgress = "gateway.connect"

// egressDialTimeout bounds a connection's set-up.
const egressDialTimeout = 10 * time.Second

// egressProxy serves one sandbox's proxy listener and DNS stub.
type egressProxy struct {
	g       *Gateway
	server  string
	session string
	egressConfig
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu sync.Mutex
	// answered maps each address the DNS stub gave out to its name, so
	// that a CONNECT to the address is decided as one to the name.
	answered map[netip.Addr]string
	refused  int  // names the DNS stub refused
	tainted  bool // a refused name has tainted the owning session's task
	// verdicts are the DNS stub's decisions by owner and name, reused
	// for the answer's lifetime: a resolver asking again (A, AAAA,
	// retries, search domains) is not a decision each time.
	verdicts map[string]dnsVerdict
}

// egressConfig is what a server's sandbox may reach.
type egressConfig struct {
	allowed []string                // "host:port", lower case
	creds   map[string]*Credentials // by destination: injected into plain HTTP
	bytes   int64                   // the cap on bytes out per agent per task; 0: none
}

// serveEgress serves a sandbox's proxy listener l, and its DNS stub's
// socket dns if there is one, until they are closed.
func (g *Gateway) serveEgress(server, session string, cfg egressConfig, l net.Listener, dns net.PacketConn) {
	p := &egressProxy{g: g, server: server, session: session, egressConfig: cfg, dial: (&net.Dialer{Timeout: egressDialTimeout}).DialContext,
		answered: map[netip.Addr]string{}}
	var wg sync.WaitGroup
	defer wg.Wait()
	if dns != nil {
		wg.Go(func() { p.serveDNS(dns) })
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.handle(c)
		}()
	}
}

func (p *egressProxy) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(egressDialTimeout))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	target, err := egressTarget(req)
	if err == nil {
		target = p.named(target)
	}
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	agent, reason := p.decide(target)
	if reason != "" {
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(reason), reason)
		return
	}
	m := p.g.budgets.egressMeter(context.Background(), p.server, agent.id.String(), agent.claims.Task, p.bytes)
	defer m.close()
	defer func() {
		if m.exhausted() {
			p.g.recordRefusal(context.Background(), agent, "gateway.egress_budget", policy.Host(p.server, target).String(),
				m.counters[0].spent, map[string]string{"server": p.server})
		}
	}()
	if cr := p.creds[target]; cr != nil {
		if req.Method == http.MethodConnect {
			// Through TLS the proxy cannot add the credential; the tool
			// has none to add either.
			fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		if req.Body != nil {
			req.Body = io.NopCloser(meteredReader{req.Body, m})
		}
		p.withCredential(c, req, target, cr)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	up, err := p.dial(ctx, "tcp", target)
	cancel()
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	defer up.Close()
	if req.Method == http.MethodConnect {
		fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	} else {
		// Plain HTTP: the request again in origin form, one per connection.
		req.RequestURI = ""
		req.Header.Del("Proxy-Connection")
		req.Header.Del("Proxy-Authorization")
		req.Close = true
		if req.Body != nil {
			req.Body = io.NopCloser(meteredReader{req.Body, m})
		}
		if err := req.Write(up); err != nil {
			return
		}
	}
	splice(c, meteredReader{br, m}, up)
}

// meteredReader charges what is read to a budget, and ends the stream
// once the budget is spent.
type meteredReader struct {
	r io.Reader
	m *meter
}

func (r meteredReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 && !r.m.charge(int64(n)) {
		return 0, errors.New("egress budget spent")
	}
	return n, err
}

// splice copies both ways until either side ends.
func splice(c net.Conn, fromClient io.Reader, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, fromClient); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// egressTarget is the host:port a proxy request asks for.
func egressTarget(r *http.Request) (string, error) {
	hostPort := r.Host
	if r.Method != http.MethodConnect {
		if r.URL == nil || r.URL.Scheme != "http" || r.URL.Host == "" {
			return "", errors.New("only CONNECT and absolute http:// requests")
		}
		hostPort = r.URL.Host
		if _, _, err := net.SplitHostPort(hostPort); err != nil {
			hostPort = net.JoinHostPort(hostPort, "80")
		}
	}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("bad target %q", hostPort)
	}
	return net.JoinHostPort(strings.ToLower(host), port), nil
}

// named is target with an address the DNS stub gave out replaced by
// the name it was given for.
func (p *egressProxy) named(target string) string {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return target
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return target
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if name, ok := p.answered[addr.Unmap()]; ok {
		return net.JoinHostPort(name, port)
	}
	return target
}

// owner is the agent whose session runs the sandbox's process, as a
// caller in its task, or nil.
func (p *egressProxy) owner() *caller {
	agent, task := p.g.sessions.agentOf(p.server, p.session)
	id, err := spiffeid.FromString(agent)
	if agent == "" || err != nil {
		return nil
	}
	return &caller{id: id, claims: &token.Claims{Subject: agent, Task: task}}
}

// evaluate decides whether c may reach target: only if the server's
// sandbox lists it and the policy allows c Action::"connect" on
// Host::"SERVER/host:port", decided with the task's state (its taint,
// manifest and grants) as the session's calls are. Reasons say why a
// destination was refused before the policy; failed is set when no
// decision could be made.
func (p *egressProxy) evaluate(ctx context.Context, c *caller, target string) (d policy.Decision, latency time.Duration, reasons []string, failed bool) {
	err := p.g.loadTask(ctx, c)
	if err == nil {
		d, latency, err = p.g.decide(ctx, c, policy.ActionConnect, policy.Host(p.server, target), []byte("{}"))
	}
	switch {
	case err != nil:
		d.Allowed, reasons, failed = false, []string{"decision failed: " + err.Error()}, true
	case !slices.Contains(p.allowed, target):
		d.Allowed, reasons = false, []string{"destination " + target + " is not in the server's sandbox egress list"}
	}
	return d, latency, reasons, failed
}

// decide evaluates target for the agent whose session runs the process
// and records the decision first, like a tool call's; a refusal taints
// the task. It returns that agent as a caller, and why not, or "".
func (p *egressProxy) decide(target string) (*caller, string) {
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	defer cancel()
	resource := policy.Host(p.server, target)
	c := p.owner()
	if c == nil {
		p.recordOrphan(ctx, ActionEgress, resource.String(), nil)
		return nil, "no agent session owns this process"
	}
	d, latency, reasons, failed := p.evaluate(ctx, c, target)
	if rerr := p.g.recordDecision(ctx, c, p.server, policy.ActionConnect, resource, nil, d, latency, reasons, map[string]string{"server_session": p.session}); rerr != nil {
		p.g.logger.Error("could not record an egress connection; refusing", "server", p.server, "target", target, "err", rerr)
		return c, "the audit log is unavailable"
	}
	if d.Allowed {
		return c, ""
	}
	why := "denied by policy (decision " + d.ID + ")"
	if len(reasons) > 0 {
		why = reasons[0] + " (decision " + d.ID + ")"
	}
	if !failed {
		p.g.distrust(ctx, c.id.String(), c.claims.Task, p.server, "the sandbox's egress proxy refused a connection to "+target)
	}
	return c, why
}

// recordOrphan records the refusal of what a sandboxed process asked
// while no agent's session owned it.
func (p *egressProxy) recordOrphan(ctx context.Context, action, target string, extra map[string]string) {
	detail := map[string]string{"gateway": p.g.cfg.Name, "server": p.server, "server_session": p.session}
	for k, v := range extra {
		detail[k] = v
	}
	ev := audit.Event{Actor: p.g.self(), Action: action,
		Target: target, Decision: audit.Deny, Reasons: []string{"no agent session owns this process"}, Detail: detail}
	if _, err := p.g.deps.Audit.Record(ctx, ev); err != nil {
		p.g.logger.Error("could not record a refused egress", "server", p.server, "err", err)
	}
}

// withCredential sends a plain-HTTP request to target with the
// destination's credential added, and answers with the response minus any
// header or bytes that carry the credential: the tool never holds it.
func (p *egressProxy) withCredential(c net.Conn, req *http.Request, target string, cr *Credentials) {
	ctx, cancel := context.WithTimeout(context.Background(), p.g.cfg.Limits.UpstreamTimeout)
	defer cancel()
	out := req.Clone(ctx)
	out.RequestURI = ""
	out.URL.Host = target
	out.Header.Del("Proxy-Connection")
	out.Header.Del("Proxy-Authorization")
	if err := p.g.injectCredential(ctx, out.Header, cr); err != nil {
		p.g.logger.Error("egress credential unavailable", "server", p.server, "target", target, "err", err)
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	tr := &http.Transport{Proxy: nil, DialContext: p.dial, DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(out)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	defer resp.Body.Close()
	forms := p.g.secretForms()
	h := http.Header{}
	p.g.copyResponseHeaders(h, resp.Header, forms)
	h.Del("Content-Length") // redaction may change it
	h.Set("Connection", "close")
	fmt.Fprintf(c, "HTTP/1.1 %03d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	_ = h.Write(c)
	fmt.Fprint(c, "\r\n")
	copyRedacted(c, resp.Body, forms, func(int) bool { return true })
}
