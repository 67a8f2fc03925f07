// Command bulkhead is the Zero Trust control plane and gateway for AI agents.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead-dev/bulkhead/internal/cli"
	"github.com/bulkhead-dev/bulkhead/internal/sandbox"
)

func main() {
	// A sandbox's first process is this program again: it sets the
	// sandbox up and becomes the confined command.
	sandbox.MaybeInit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, cli.OSEnv)
	stop()
	os.Exit(code)
}
