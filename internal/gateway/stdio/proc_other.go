//go:build !linux

package stdio

import (
	"os"
	"syscall"
)

// sysProcAttr is nil off Linux: the bridge is built and tested on Linux,
// where process groups and the parent-death signal confine the program.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// terminate stops the program (no gentler portable signal exists).
func terminate(p *os.Process) { _ = p.Kill() }

// kill stops the program.
func kill(p *os.Process) { _ = p.Kill() }
