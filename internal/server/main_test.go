package server_test

import (
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

func TestMain(m *testing.M) {
	// The gateway tests spawn this binary as a stdio MCP server.
	gatewaytest.MaybeServeStdio()
	os.Exit(m.Run())
}
