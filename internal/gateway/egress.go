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

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// The egress proxy serves a sandboxed stdio server's only way out (see
// sandbox.EgressProxy): HTTP CONNECT, and plain HTTP requests in absolute
// form. Each connection is allowed only to a destination the server's
// sandbox.egress lists, only while an agent's session runs the process,
// and is recorded (gateway.connect, allow or deny) with that agent before
// a byte moves.

// ActionEgress records a sandboxed server's outbound connection.
const ActionEgress = "gateway.connect"

// egressDialTimeout bounds a connection's set-up.
const egressDialTimeout = 10 * time.Second

// egressProxy serves one sandbox's proxy listener.
type egressProxy struct {
	g       *Gateway
	server  string
	session string
	allowed []string // "host:port", lower case
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
}

// serveEgress serves l until it is closed.
func (g *Gateway) serveEgress(server, session string, allowed []string, l net.Listener) {
	p := &egressProxy{g: g, server: server, session: session, allowed: allowed, dial: (&net.Dialer{Timeout: egressDialTimeout}).DialContext}
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
	if reason := p.decide(target); reason != "" {
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(reason), reason)
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
		if err := req.Write(up); err != nil {
			return
		}
	}
	splice(c, br, up)
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

// decide allows target for the agent whose session runs the process, and
// records the outcome; it returns why not, or "".
func (p *egressProxy) decide(target string) string {
	agent := p.g.sessions.agentOf(p.server, p.session)
	reason := ""
	switch {
	case agent == "":
		reason = "no agent session owns this process"
	case !slices.Contains(p.allowed, target):
		reason = "destination " + target + " is not in the server's sandbox egress list"
	}
	actor := audit.Actor{Kind: audit.ActorWorkload, ID: "gateway/" + p.g.cfg.Name}
	if agent != "" {
		actor = audit.Actor{Kind: audit.ActorAgent, ID: agent}
	}
	ev := audit.Event{Actor: actor, Action: ActionEgress, Target: "Host::" + fmt.Sprintf("%q", target), Decision: audit.Allow,
		Detail: map[string]string{"gateway": p.g.cfg.Name, "server": p.server, "session": p.session}}
	if reason != "" {
		ev.Decision, ev.Reasons = audit.Deny, []string{reason}
	}
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	defer cancel()
	if _, err := p.g.deps.Audit.Record(ctx, ev); err != nil {
		p.g.logger.Error("could not record an egress connection; refusing", "server", p.server, "target", target, "err", err)
		return "the audit log is unavailable"
	}
	return reason
}
