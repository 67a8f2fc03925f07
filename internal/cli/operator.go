package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func (e *env) operatorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Issue and revoke credentials for human operators",
		Long: `Each human who approves elevations needs a credential of their own
(spiffe://TRUST-DOMAIN/operator/NAME), so that approvals name a person and
two-person approval needs two. An operator issues one for another; the
other then passes --credentials DIR to every command.`,
	}
	cmd.AddCommand(e.operatorIssueCmd(), e.operatorRevokeCmd(), e.operatorPasskeyCmd())
	return cmd
}

func (e *env) operatorIssueCmd() *cobra.Command {
	var (
		out string
		ttl time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue NAME --out DIR",
		Short: "Issue a credential for operator NAME into DIR (the key is generated here)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out DIR is required")
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			svid, err := c.IssueOperatorSVID(cmd.Context(), args[0], out, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "issued %s into %s (expires %s); renew it with 'bulkhead agent renew --dir %s'\n",
				svid.ID, out, fmtTime(svid.Certificates[0].NotAfter), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for svid.pem, svid_key.pem and svid_bundle.pem")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default 24h, at most 720h)")
	return cmd
}

func (e *env) operatorRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke every certificate of operator NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			res, err := c.RevokeOperator(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked %d certificate(s) of operator %s\n", len(res.Serials), args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	return cmd
}

func (e *env) operatorPasskeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "passkey",
		Short: "Passkeys with which an operator signs in to the console",
	}
	var asJSON bool
	add := &cobra.Command{
		Use:   "add",
		Short: "Print a one-time link that registers a passkey for this operator's identity",
		Long: `Prints a link, valid for 24 hours and for one passkey, that registers a
passkey for the operator whose credential runs the command. Open it in the
browser of the human who holds that credential; the authenticator must
verify the user (a PIN, a fingerprint or a face).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			l, err := c.PasskeyLink(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, l)
			}
			fmt.Fprintf(e.stdout, "open this link to register a passkey for %s (once, before %s):\n%s\n", l.Operator, fmtTime(l.ExpiresAt), l.URL)
			return nil
		},
	}
	add.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list := &cobra.Command{
		Use:   "list",
		Short: "List this operator's passkeys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			keys, err := c.Passkeys(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, keys)
			}
			rows := make([][]string, 0, len(keys))
			for _, k := range keys {
				state := "working"
				if k.Revoked {
					state = "revoked"
				}
				rows = append(rows, []string{k.ID, fmtTime(k.CreatedAt), fmtTime(k.LastUsedAt), state})
			}
			return table(e.stdout, []string{"ID", "CREATED", "LAST USED", "STATE"}, rows)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke every passkey of this operator (a lost or stolen authenticator); its console sessions end",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			if err := c.RevokePasskeys(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "passkeys revoked; 'bulkhead operator passkey add' registers a new one")
			return nil
		},
	}
	cmd.AddCommand(add, list, revoke)
	return cmd
}
