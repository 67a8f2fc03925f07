package gateway

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

// confinement returns how a stdio server's processes are confined: by
// its sandbox profile (strict unless configured), or nil for sandbox:
// none. A profile this kernel cannot enforce refuses the configuration.
func confinement(m *MCP, violated func(session string, v sandbox.Violation), egress func(session string, proxy egressConfig, l net.Listener, dns net.PacketConn)) (func(*exec.Cmd, string) (func() error, func(), error), error) {
	sb := m.Sandbox
	if sb == nil {
		sb = &Sandbox{}
	}
	if sb.None {
		return nil, nil
	}
	p, err := sandbox.LoadProfile(sb.Profile)
	if err != nil {
		return nil, err
	}
	p.Read = append(p.Read, sb.Read...)
	p.Write = append(p.Write, sb.Write...)
	if sb.Memory > 0 {
		p.Memory = sb.Memory
	}
	if sb.Pids > 0 {
		p.Pids = sb.Pids
	}
	// The server's environment is the one its configuration gives.
	p.Env = m.Env
	var allowed []string
	creds := map[string]*Credentials{}
	for _, h := range sb.Egress {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("sandbox egress %q must be host:port", h)
		}
		dest := net.JoinHostPort(strings.ToLower(host), port)
		allowed = append(allowed, dest)
		if cr := sb.EgressCredentials[h]; cr != nil {
			creds[dest] = cr
		}
	}
	if len(allowed) > 0 {
		p.Egress = sandbox.EgressProxy
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := sandbox.Check().Enforce(); err != nil {
		return nil, fmt.Errorf("%w (or set sandbox: none to run it unconfined)", err)
	}
	return func(cmd *exec.Cmd, session string) (func() error, func(), error) {
		c, err := sandbox.Wrap(cmd, p)
		if err != nil {
			return nil, nil, err
		}
		c.OnViolation = func(v sandbox.Violation) { violated(session, v) }
		if len(allowed) > 0 {
			c.ServeEgress = func(l net.Listener, dns net.PacketConn) {
				egress(session, egressConfig{allowed, creds, sb.EgressBytes}, l, dns)
			}
		}
		return c.Started, c.Close, nil
	}, nil
}

// recordViolation puts a system call the sandbox refused into the audit
// log, naming the agent whose session's process made it, and taints the
// task that session was opened for: what that process returns can no
// longer be trusted. It is called before the refused call returns.
func (g *Gateway) recordViolation(server, session string, v sandbox.Violation) {
	actor := g.self()
	agent, task := g.sessions.agentOf(server, session)
	if agent != "" {
		actor = audit.Actor{Kind: audit.ActorAgent, ID: agent}
	}
	why := "the sandbox refused the system call " + v.Syscall
	ev := audit.Event{Actor: actor, Action: ActionSandboxViolation, Target: policy.ToolServer(server).String(), Decision: audit.Deny,
		Reasons: []string{why}, Task: task,
		Detail: map[string]string{"gateway": g.cfg.Name, "server": server, "session": session, "syscall": v.Syscall}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
		g.logger.Error("could not record a sandbox violation", "server", server, "syscall", v.Syscall, "err", err)
	}
	g.logger.Warn("sandbox violation", "server", server, "agent", actor.ID, "syscall", v.Syscall)
	g.distrust(ctx, agent, task, server, why)
}

// distrust taints the task an agent's session on server serves, because
// that session's process tried what its sandbox refuses: what it returns
// can no longer be trusted.
func (g *Gateway) distrust(ctx context.Context, agent, task, server, why string) {
	if task == "" || agent == "" || g.tasks == nil {
		return
	}
	_, tainted, err := g.tasks.src.ReportOutput(ctx, task, agent, policy.ToolServer(server), why)
	if err != nil {
		// This gateway treats the task as tainted all the same.
		g.logger.Error("could not taint the task of a sandbox violation", "task", task, "err", err)
	}
	if err != nil || tainted {
		g.tasks.markTainted(task)
	}
}

// ActionSandboxViolation records a system call a sandbox refused.
const ActionSandboxViolation = "sandbox.violation"
