package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

func init() {
	// The gateway's structured settings live in the same config file as
	// its flags.
	sections["servers"], sections["limits"] = true, true
}

func (e *env) gatewayCmd() *cobra.Command {
	var listen, name, resource, dir string
	cmd := &cobra.Command{
		Use:   "gateway --config FILE",
		Short: "Run the gateway: every agent tool call authenticated, authorized and recorded",
		Long: `Run a gateway (policy enforcement point) in front of MCP servers and HTTP
APIs, as configured in --config (see examples/quickstart/gateway.yaml).

The gateway is a workload of the trust domain, spiffe://TD/bulkhead/gateway/NAME.
On first start it obtains its credential with the operator credential
(--credentials) and keeps it rotated; it reaches the control plane at --server.
To run it inside the control plane instead, use 'bulkhead serve --gateway FILE'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if e.file == nil || len(e.file.Raw) == 0 {
				return fmt.Errorf("--config FILE (the gateway configuration) is required")
			}
			known := allFlags(cmd.Root())
			cfg, err := gateway.ParseConfig(e.file.Raw, func(k string) bool { return known[k] })
			if err != nil {
				return err
			}
			// Flags (and BULKHEAD_* variables) override the file.
			for flag, dst := range map[string]*string{"listen": &cfg.Listen, "name": &cfg.Name, "resource": &cfg.Resource} {
				if f := cmd.Flags().Lookup(flag); f.Changed {
					*dst = f.Value.String()
				}
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if dir == "" {
				dir = filepath.Join(e.dataDir, "gateway", cfg.Name)
			}
			sa := &gateway.Standalone{Config: cfg, ServerURL: e.server, Dir: dir,
				Clock: clock.Real{}, Logger: e.logger.With("component", "gateway"),
				Ready: func(addr string) {
					e.logger.Info("gateway ready", "url", "https://"+addr, "resource", cfg.Resource, "servers", len(cfg.Servers))
				}}
			if !svidfile.Exists(dir) && svidfile.Exists(e.credentials) {
				op, err := client.NewFromDir(e.server, e.credentials)
				if err != nil {
					return err
				}
				sa.Operator = op
			}
			return sa.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9443", "HTTPS address agents connect to")
	f.StringVar(&name, "name", "default", "gateway name (its SPIFFE ID is spiffe://TD/bulkhead/gateway/NAME)")
	f.StringVar(&resource, "resource", "", "token audience (default https://LISTEN)")
	f.StringVar(&dir, "dir", "", "the gateway's credential directory (default DATA-DIR/gateway/NAME)")
	cmd.AddCommand(e.gatewayRevokeCmd())
	return cmd
}

func (e *env) gatewayRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke every certificate of gateway NAME (its key may be stolen)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			r, err := c.RevokeComponent(cmd.Context(), "gateway", args[0], reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked gateway %s: %d certificate(s); issue it a new credential to bring it back\n", args[0], len(r.Serials))
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}
