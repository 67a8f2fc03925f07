package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

// egressProxy serves one sandbox's proxy listener.
type egressProxy struct {
	g       *Gateway
	server  string
	session string
	egressConfig
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// egressConfig is what a server's sandbox may reach.
type egressConfig struct {
	allowed []string                // "host:port", lower case
	creds   map[string]*Credentials // by destination: injected into plain HTTP
	bytes   int64                   // the cap on bytes out per agent per task; 0: none
}

// serveEgress serves l until it is closed.
func (g *Gateway) serveEgress(server, session string, cfg egressConfig, l net.Listener) {
	p := &egressProxy{g: g, server: server, session: session, egressConfig: cfg, dial: (&net.Dialer{Timeout: egressDialTimeout}).DialContext}
	var wg sync.WaitGroup
	defer wg.Wait()
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

// decide allows target only if the server's sandbox lists it and the
// policy allows the agent whose session runs the process to connect to
// it (Action::"connect" on Host::"SERVER/host:port"), and records the
// decision first, like a tool call's. It returns that agent as a caller,
// and why not, or "".
func (p *egressProxy) decide(target string) (*caller, string) {
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	defer cancel()
	resource := policy.Host(p.server, target)
	detail := map[string]string{"server_session": p.session}
	agent, task := p.g.sessions.agentOf(p.server, p.session)
	id, err := spiffeid.FromString(agent)
	if agent == "" || err != nil {
		ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorWorkload, ID: "gateway/" + p.g.cfg.Name}, Action: ActionEgress,
			Target: resource.String(), Decision: audit.Deny, Reasons: []string{"no agent session owns this process"},
			Detail: map[string]string{"gateway": p.g.cfg.Name, "server": p.server, "server_session": p.session}}
		if _, err := p.g.deps.Audit.Record(ctx, ev); err != nil {
			p.g.logger.Error("could not record a refused egress connection", "server", p.server, "err", err)
		}
		return nil, "no agent session owns this process"
	}
	c := &caller{id: id, claims: &token.Claims{Subject: agent, Task: task}}
	// Decided with the task's state, as the session's calls are: its
	// taint, manifest and grants.
	var d policy.Decision
	var latency time.Duration
	err = p.g.loadTask(ctx, c)
	if err == nil {
		d, latency, err = p.g.decide(ctx, c, policy.ActionConnect, resource, []byte("{}"))
	}
	var reasons []string
	switch {
	case err != nil:
		d.Allowed, reasons = false, []string{"decision failed: " + err.Error()}
	case !slices.Contains(p.allowed, target):
		d.Allowed, reasons = false, []string{"destination " + target + " is not in the server's sandbox egress list"}
	}
	if rerr := p.g.recordDecision(ctx, c, p.server, policy.ActionConnect, resource, nil, d, latency, reasons, detail); rerr != nil {
		p.g.logger.Error("could not record an egress connection; refusing", "server", p.server, "target", target, "err", rerr)
		return c, "the audit log is unavailable"
	}
	if !d.Allowed {
		if len(reasons) > 0 {
			return c, reasons[0] + " (decision " + d.ID + ")"
		}
		return c, "denied by policy (decision " + d.ID + ")"
	}
	return c, ""
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
