package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/connect"
)

func (e *env) connectCmd() *cobra.Command {
	var (
		dir, gateway, listen, resource, gatewayName, task string
		scopes                                            []string
	)
	cmd := &cobra.Command{
		Use:   "connect --dir AGENTDIR --gateway URL [--listen 127.0.0.1:7070]",
		Short: "Run the agent sidecar: plain HTTP on loopback, forwarded to the gateway with mTLS and a bound token",
		Long: `Run the sidecar for an agent in any language. It serves plain HTTP on a
loopback address and forwards every request to the gateway over mutual TLS
with the agent's SVID (from --dir), adding a fresh access token bound to it.
It mirrors the gateway's paths, so an MCP client pointed at
http://127.0.0.1:7070/mcp/files, or a script calling
http://127.0.0.1:7070/http/billing/v1/invoices, needs no credentials of its own.

The SVID is renewed through the control plane (--server) at half its life
and written back to --dir; tokens follow it. Any Authorization or Cookie
header the local client sends is dropped. The sidecar listens only on
loopback: whoever can reach it acts as the agent.

With --task the tokens carry the agent's open task. The local API under
/.bulkhead/v1/ (docs/connect.md) opens and completes the task the tokens
carry and requests and polls elevations in it, for agents that cannot call
the control plane themselves; it answers only requests with the header
"Bulkhead-Sidecar: 1", from loopback, without an Origin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || gateway == "" {
				return fmt.Errorf("--dir and --gateway are required")
			}
			sc, err := connect.New(connect.Config{Dir: dir, ServerURL: e.server, GatewayURL: gateway, Listen: listen,
				Resource: resource, GatewayName: gatewayName, Scopes: scopes, Task: task, Logger: e.logger})
			if err != nil {
				return err
			}
			if err := sc.Listen(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "bulkhead connect: %s ready at %s (MCP: %s/mcp/NAME, HTTP: %s/http/NAME/..., local API: %s%sv1/) -> %s\n",
				sc.ID(), sc.URL(), sc.URL(), sc.URL(), sc.URL(), connect.LocalPrefix, gateway)
			if task != "" {
				fmt.Fprintf(e.stderr, "bulkhead connect: tokens carry task %s\n", task)
			}
			return sc.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the agent's credential directory (renewed SVIDs are written back to it)")
	f.StringVar(&gateway, "gateway", "", "the gateway's URL (https://HOST:PORT)")
	f.StringVar(&listen, "listen", connect.DefaultListen, "loopback address to serve plain HTTP on")
	f.StringVar(&resource, "resource", "", "the gateway's resource, the tokens' audience (default: --gateway)")
	f.StringVar(&gatewayName, "gateway-name", "", "accept only the gateway spiffe://TD/bulkhead/gateway/NAME (default: any Bulkhead gateway)")
	f.StringSliceVar(&scopes, "scope", nil, "scope to request (repeatable; default: all the agent may have)")
	f.StringVar(&task, "task", "", "the agent's open task (tk_...): every token names it (default: none, the agent's baseline)")
	return cmd
}
