package server_test

import (
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func TestMain(m *testing.M) {
	// The gateway tests spawn this binary as a stdio MCP server.
	gatewaytest.MaybeServeStdio()
	// The replica tests spawn it as a control plane replica.
	testenv.MaybeServeReplica()
	os.Exit(m.Run())
}
