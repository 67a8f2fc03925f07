//go:build !linux

package gatewaytest

import "errors"

// ptraceInit is refused where there is no ptrace to try.
func ptraceInit() error { return errors.New("operation not permitted") }
