package server_test

import (
	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func TestMain(m *testing.M) {
	// The gateway's sandboxed stdio servers start as this binary again.
	sandbox.MaybeInit()
	// The gateway tests spawn this binary as a stdio MCP server.
	gatewaytest.MaybeServeStdio()
	// The replica tests spawn it as a control plane replica.
	testenv.MaybeServeReplica()
	os.Exit(m.Run())
}
