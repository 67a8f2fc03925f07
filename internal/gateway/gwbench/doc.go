// Package gwbench measures the gateway layer by layer against a direct
// connection to the upstream MCP server, in one run on one machine:
// direct, a plain reverse proxy, + mTLS, + token verification, + policy,
// + the durable audit record (the full gateway). Run it with
//
//	go test -run '^$' -bench . -benchtime 3s ./internal/gateway/gwbench/
//
// Each case reports p50 and p99 latency (µs) beside ns/op; docs/benchmarks.md
// keeps the figures as ratios to the direct case.
package gwbench
