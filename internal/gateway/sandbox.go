package gateway

import (
	"fmt"
	"os/exec"

	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

// confinement returns how a stdio server's processes are confined: by
// its sandbox profile (strict unless configured), or nil for sandbox:
// none. A profile this kernel cannot enforce refuses the configuration.
func confinement(m *MCP) (func(*exec.Cmd) (func() error, func(), error), error) {
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
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := sandbox.Check().Enforce(); err != nil {
		return nil, fmt.Errorf("%w (or set sandbox: none to run it unconfined)", err)
	}
	return func(cmd *exec.Cmd) (func() error, func(), error) {
		c, err := sandbox.Wrap(cmd, p)
		if err != nil {
			return nil, nil, err
		}
		return c.Started, c.Close, nil
	}, nil
}
