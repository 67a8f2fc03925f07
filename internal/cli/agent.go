package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey"
)

func (e *env) agentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Register agents and manage their identities",
	}
	cmd.AddCommand(e.agentScopesCmd())
	cmd.AddCommand(e.agentCreateCmd(), e.agentListCmd(), e.agentShowCmd(), e.agentJoinTokenCmd(),
		e.agentEnrollCmd(), e.agentRenewCmd(), e.agentRevokeCmd(), e.agentSetEnabledCmd(false), e.agentSetEnabledCmd(true))
	cmd.AddCommand(e.agentRoleCmd(), e.agentBaselineCmd(), e.agentTPMCmd(), e.agentEKCmd())
	return cmd
}

func (e *env) agentCreateCmd() *cobra.Command {
	var (
		ttl    time.Duration
		scopes []string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Register an agent (SPIFFE ID spiffe://TRUST-DOMAIN/agent/NAME)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			a, err := c.CreateAgent(cmd.Context(), args[0], ttl, scopes...)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			fmt.Fprintf(e.stdout, "created agent %s (%s, SVID TTL %s, scopes: %s)\n", a.Name, a.SPIFFEID, a.SVIDTTL, orNone(a.Scopes))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime of the agent's SVIDs (default: the server's, 1h)")
	cmd.Flags().StringSliceVar(&scopes, "scope", nil, "OAuth scope the agent may request (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			agents, err := c.ListAgents(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, agents)
			}
			rows := make([][]string, 0, len(agents))
			for _, a := range agents {
				rows = append(rows, []string{a.Name, a.Status, a.SVIDTTL, a.SPIFFEID, fmtTime(a.CreatedAt)})
			}
			return table(e.stdout, []string{"NAME", "STATUS", "SVID TTL", "SPIFFE ID", "CREATED"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an agent and its certificates",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			a, err := c.GetAgent(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			fmt.Fprintf(e.stdout, "name:        %s\nspiffe id:   %s\nstatus:      %s\nsvid ttl:    %s\nscopes:      %s\ncreated:     %s by %s\n",
				a.Name, a.SPIFFEID, a.Status, a.SVIDTTL, orNone(a.Scopes), fmtTime(a.CreatedAt), a.CreatedBy)
			if a.Parent != "" {
				fmt.Fprintf(e.stdout, "parent:      %s\n", a.Parent)
			}
			if a.TPM != "" {
				fmt.Fprintf(e.stdout, "tpm:         %s\n", a.TPM)
			}
			fmt.Fprintln(e.stdout)
			rows := make([][]string, 0, len(a.Certificates))
			for _, ct := range a.Certificates {
				state := "valid"
				if ct.Revoked {
					state = "revoked " + fmtTime(ct.RevokedAt)
				} else if time.Now().After(ct.NotAfter) {
					state = "expired"
				}
				rows = append(rows, []string{ct.Serial, fmtTime(ct.NotBefore), fmtTime(ct.NotAfter), state})
			}
			return table(e.stdout, []string{"SERIAL", "NOT BEFORE", "NOT AFTER", "STATE"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentJoinTokenCmd() *cobra.Command {
	return e.joinTokenCmd("Print a one-time, short-lived enrollment token for an agent",
		`Print a one-time enrollment token. It is valid once, for --ttl, and pins
the CA, so 'bulkhead agent enroll --token TOKEN' needs nothing else to
authenticate the control plane. Treat it as a secret until it is used.`,
		func(ctx context.Context, c *client.Client, name string, ttl time.Duration) (api.JoinToken, error) {
			return c.JoinToken(ctx, name, ttl)
		})
}

// joinTokenCmd is `join-token NAME` for whatever create makes tokens for.
func (e *env) joinTokenCmd(short, long string, create func(context.Context, *client.Client, string, time.Duration) (api.JoinToken, error)) *cobra.Command {
	var (
		ttl    time.Duration
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "join-token NAME",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			t, err := create(cmd.Context(), c, args[0], ttl)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, t)
			}
			fmt.Fprintln(e.stdout, t.Token)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "how long the token stays valid (max 24h)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the expiry)")
	return cmd
}

func (e *env) agentEnrollCmd() *cobra.Command {
	var token, out, tpm string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "enroll --token TOKEN --out DIR [--tpm[=DEVICE]]",
		Short: "Enroll this agent: generate a key here and obtain its first SVID",
		Long: `Run on the agent's side. Generates a private key locally (it never leaves
this machine), sends a CSR with the join token, and writes svid.pem,
svid_key.pem (mode 0600) and svid_bundle.pem to --out.

With --tpm the key is created inside the TPM (--tpm=DEVICE, or
--tpm=unix:PATH for swtpm; default /dev/tpmrm0) and
proven to be there (credential activation to the endorsement key, a quote
over a fresh nonce, and the key's certification): the control plane issues
an SVID that says so, and svid_key.tpm holds a blob only that TPM can load.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token == "" {
				return fmt.Errorf("--token is required (from 'bulkhead agent join-token NAME')")
			}
			if out == "" {
				return fmt.Errorf("--out DIR is required")
			}
			enroll := client.Enroll
			if cmd.Flags().Changed("tpm") {
				enroll = func(ctx context.Context, server, token, out string) (*x509svid.SVID, error) {
					return client.EnrollTPM(ctx, server, token, out, tpm)
				}
			}
			svid, err := enroll(cmd.Context(), e.server, token, out)
			if err != nil {
				return err
			}
			return e.printSVID(svid.ID.String(), svid.Certificates[0].NotAfter, out, asJSON, "enrolled")
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "one-time join token")
	cmd.Flags().StringVar(&out, "out", "", "directory for svid.pem, svid_key.pem, svid_bundle.pem")
	cmd.Flags().StringVar(&tpm, "tpm", tpmkey.DefaultDevice, "keep the key in this TPM (a device, or unix:PATH for swtpm) and prove it")
	cmd.Flags().Lookup("tpm").NoOptDefVal = tpmkey.DefaultDevice
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) printSVID(id string, notAfter time.Time, dir string, asJSON bool, verb string) error {
	if asJSON {
		return printJSON(e.stdout, map[string]any{"spiffe_id": id, "expires_at": notAfter.UTC(), "dir": dir})
	}
	fmt.Fprintf(e.stdout, "%s %s; SVID in %s, expires %s\n", verb, id, dir, fmtTime(notAfter))
	return nil
}

func (e *env) agentRenewCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "renew --dir DIR",
		Short: "Renew an SVID over mTLS with a new key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			c, err := client.NewFromDir(e.server, dir)
			if err != nil {
				return err
			}
			svid, err := c.Renew(cmd.Context(), dir)
			if err != nil {
				return fmt.Errorf("renewal refused: %w", err)
			}
			return e.printSVID(svid.ID.String(), svid.Certificates[0].NotAfter, dir, asJSON, "renewed")
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "credential directory to renew (rewritten in place)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentRevokeCmd() *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke every certificate of an agent and block its renewal",
		Long: `Revoke every certificate of an agent: they go on the CRL, stop
authenticating at once, and cannot be renewed. To let the agent back,
'bulkhead agent enable NAME' and enroll it again with a new join token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			r, err := c.RevokeAgent(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			fmt.Fprintf(e.stdout, "revoked agent %s: %d certificate(s)\n", r.Agent, len(r.Serials))
			for _, s := range r.Serials {
				fmt.Fprintf(e.stdout, "  %s\n", s)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentSetEnabledCmd(enable bool) *cobra.Command {
	verb, short := "disable", "Disable an agent: it cannot authenticate, renew or enroll until enabled"
	if enable {
		verb, short = "enable", "Enable a disabled or revoked agent"
	}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			a, err := c.SetAgentEnabled(cmd.Context(), args[0], enable)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			fmt.Fprintf(e.stdout, "agent %s is %s\n", a.Name, a.Status)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orNone(scopes []string) string {
	if len(scopes) == 0 {
		return "none"
	}
	return strings.Join(scopes, " ")
}

func (e *env) agentScopesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "scopes NAME [SCOPE]...",
		Short: "Set the OAuth scopes an agent may request (none: no tokens)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			a, err := c.SetAgentScopes(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			fmt.Fprintf(e.stdout, "agent %s may request: %s\n", a.Name, orNone(a.Scopes))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentTPMCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tpm NAME EK",
		Short: "Require an agent's key to live in a TPM: EK is sha256:HEX (from 'agent ek'), ek-ca, or none",
		Long: `Pin the TPM an agent's key must live in. From then on the agent enrolls and
renews only with 'agent enroll --tpm', proving its key is in that TPM.

EK is the endorsement key's hash that 'bulkhead agent ek' prints on the
agent's machine; "ek-ca" accepts the first TPM whose endorsement key
certificate chains to a CA given to serve --tpm-ek-ca, and pins it; "none"
lifts the requirement.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			ek := args[1]
			if ek == "none" {
				ek = ""
			}
			a, err := c.SetAgentTPM(cmd.Context(), args[0], ek)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			fmt.Fprintf(e.stdout, "agent %s: TPM %s\n", a.Name, orDash(a.TPM))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentEKCmd() *cobra.Command {
	var tpm string
	cmd := &cobra.Command{
		Use:   "ek [--tpm DEVICE]",
		Short: "Print this machine's TPM endorsement key hash, for 'agent tpm NAME EK'",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := tpmkey.Open(tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			ek, err := t.EKHash()
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, ek)
			return nil
		},
	}
	cmd.Flags().StringVar(&tpm, "tpm", tpmkey.DefaultDevice, "the TPM (a device, or unix:PATH for swtpm)")
	return cmd
}
