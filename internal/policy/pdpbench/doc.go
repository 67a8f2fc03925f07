// Package pdpbench compares Bulkhead's indexed PDP with raw cedar-go and
// with OPA (an equivalent data-driven Rego policy) on the same per-agent
// policy sets, in one process and one run, and writes the result to
// docs/benchmarks.md. Everything is in its tests, so neither OPA nor the
// harness reaches the bulkhead binary:
//
//	BULKHEAD_PDPBENCH=write go test ./internal/policy/pdpbench -run TestPDPComparison -timeout 30m -v
//
// Without BULKHEAD_PDPBENCH the test checks only that the three engines
// agree on every sampled request at small sizes, and the usual
// 'go test -bench .' runs per-engine Go benchmarks.
package pdpbench
