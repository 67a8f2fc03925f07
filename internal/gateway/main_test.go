package gateway_test

import (
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

func TestMain(m *testing.M) {
	// Sandboxed stdio servers start as this binary again, then run it as
	// the notes server.
	sandbox.MaybeInit()
	gatewaytest.MaybeServeStdio()
	os.Exit(m.Run())
}
