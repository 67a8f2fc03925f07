//go:build !linux

package sandbox

import (
	"errors"
	"net"
	"os/exec"
)

var errUnsupported = errors.New("sandbox: only Linux can confine a command")

// MaybeInit does nothing here.
func MaybeInit() {}

// Confined is a command prepared by Wrap.
type Confined struct {
	OnViolation func(Violation)
	ServeEgress func(proxy net.Listener, dns net.PacketConn)
}

// Wrap refuses: there is no sandbox on this system.
func Wrap(*exec.Cmd, Profile) (*Confined, error) { return nil, errUnsupported }

// Started does nothing.
func (*Confined) Started() error { return errUnsupported }

// Close does nothing.
func (*Confined) Close() {}

// Support is what the running kernel can enforce: nothing here.
type Support struct{}

// Check reports no support.
func Check() Support { return Support{} }

// Enforce refuses.
func (Support) Enforce() error { return errUnsupported }

// Lines describes the support.
func (Support) Lines() []string { return []string{"sandbox: not supported on this system"} }
