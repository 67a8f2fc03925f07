package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

func init() {
	// The gateway's structured settings live in the same config file as
	// its flags.
	sections["servers"], sections["limits"], sections["sensitive"] = true, true, true
}

func (e *env) gatewayCmd() *cobra.Command {
	var listen, name, resource, dir, joinToken, auditKey string
	var maxStale time.Duration
	cmd := &cobra.Command{
		Use:   "gateway --config FILE",
		Short: "Run the gateway: every agent tool call authenticated, authorized and recorded",
		Long: `Run a gateway (policy enforcement point) in front of MCP servers and HTTP
APIs, as configured in --config (see examples/quickstart/gateway.yaml).

The gateway is a workload of the trust domain, spiffe://TD/bulkhead/gateway/NAME.
On first start it enrolls with a one-time join token (--join-token, from
'bulkhead gateway join-token NAME' on an operator's machine; its key is
generated here) or, failing that, with the operator credential
(--credentials); then it keeps its credential rotated. It reaches the control
plane at --server. With a join token the gateway's host never holds an
operator credential, so register its resource first ('bulkhead resource add').
To run it inside the control plane instead, use 'bulkhead serve --gateway FILE'.

The gateway also witnesses the control plane's audit log: it keeps the
newest signed checkpoint it verified in DIR/audit_witness.json and raises an
alert (an audit.witness record and an error log line) if the log ever
shows one that does not extend it, as after a truncation.

--server may list several control plane replicas (https://a:8443,https://b:8443):
the gateway follows the event stream from whichever answers. While none
answers it keeps serving on its cached revocation state for --max-stale
(records of those decisions carry cached_state_age_ms), then refuses
everyone until one does.`,
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
			sa := &server.StandaloneGateway{Config: cfg, ServerURL: e.server, Dir: dir, JoinToken: joinToken, AuditKey: auditKey, MaxStale: maxStale,
				Clock: clock.Real{}, Logger: e.logger.With("component", "gateway"),
				Ready: func(addr string) {
					e.logger.Info("gateway ready", "url", "https://"+addr, "resource", cfg.Resource, "servers", len(cfg.Servers))
				}}
			if !svidfile.Exists(dir) && joinToken == "" && svidfile.Exists(e.credentials) {
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
	f.StringVar(&joinToken, "join-token", "", "one-time token to enroll with on first start ('bulkhead gateway join-token NAME'); prefer BULKHEAD_JOIN_TOKEN, which ps does not show")
	f.DurationVar(&maxStale, "max-stale", gateway.DefaultMaxStale, "how long to keep serving on cached revocation state while no control plane replica (--server A,B,...) answers the event feed; then refuse everyone")
	f.StringVar(&auditKey, "audit-key", "", "the control plane's audit log key ('bulkhead audit key') the gateway's witness pins; default: trust the key the control plane names on first start")
	cmd.AddCommand(e.gatewayRevokeCmd(), e.gatewayJoinTokenCmd())
	return cmd
}

func (e *env) gatewayJoinTokenCmd() *cobra.Command {
	return e.joinTokenCmd("Print a one-time, short-lived enrollment token for gateway NAME",
		`Print a one-time enrollment token for spiffe://TD/bulkhead/gateway/NAME.
'bulkhead gateway --name NAME --join-token TOKEN' enrolls with it on first
start, generating its key on its own host: no operator credential needs to
be there. The token is valid once, for --ttl, and pins the CA; treat it as a
secret until it is used.`,
		func(ctx context.Context, c *client.Client, name string, ttl time.Duration) (api.JoinToken, error) {
			return c.ComponentJoinToken(ctx, "gateway", name, ttl)
		})
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
