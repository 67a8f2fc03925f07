package gatewaytest

import "syscall"

// ptraceInit tries to attach to PID 1, as a tool escaping its sandbox
// would.
func ptraceInit() error {
	_, _, e := syscall.Syscall6(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, 1, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
