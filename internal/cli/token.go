package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

func (e *env) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Obtain, inspect, delegate and revoke certificate-bound access tokens",
	}
	cmd.AddCommand(e.tokenGetCmd(), e.tokenInspectCmd(), e.tokenRevokeCmd(), e.tokenDelegateCmd())
	return cmd
}

func (e *env) tokenGetCmd() *cobra.Command {
	var (
		dir, resource, task string
		scopes              []string
		asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "get --dir AGENTDIR --resource URI [--scope SCOPE]...",
		Short: "Print an access token for the agent in AGENTDIR (client_credentials over mTLS)",
		Long: `Print an access token for scripts. The token is bound to the agent's
certificate (cnf.x5t#S256): it is useless without the agent's key, so it is
only good for calls made with that SVID over mutual TLS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || resource == "" {
				return fmt.Errorf("--dir and --resource are required")
			}
			c, err := client.NewFromDir(e.server, dir)
			if err != nil {
				return err
			}
			resp, err := c.RequestTaskToken(cmd.Context(), resource, task, scopes...)
			if err != nil {
				return explainTask(cmd.Context(), c, dir, task, err)
			}
			if asJSON {
				return printJSON(e.stdout, resp)
			}
			fmt.Fprintln(e.stdout, resp.AccessToken)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the agent's credential directory")
	cmd.Flags().StringVar(&resource, "resource", "", "the API the token is for (a registered resource)")
	cmd.Flags().StringSliceVar(&scopes, "scope", nil, "scope to request (repeatable; default: all the agent may have)")
	cmd.Flags().StringVar(&task, "task", "", "the agent's open task: calls made with the token are decided in it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole token response")
	return cmd
}

// explainTask adds to err, a refusal of something asked for task, the
// command that goes on when the task has ended: the control plane's
// message says how and when it ended, and an ended task stays ended.
func explainTask(ctx context.Context, c *client.Client, dir, task string, err error) error {
	if task == "" {
		return err
	}
	t, terr := c.Task(ctx, task)
	if terr != nil || t.Open {
		return err
	}
	return fmt.Errorf("%w\nto go on, open a new task and use its id: bulkhead task start --dir %s --manifest %s", err, dir, t.Manifest)
}

// readToken takes a token argument, or "-" for standard input.
func readToken(arg string) (string, error) {
	if arg != "-" {
		return strings.TrimSpace(arg), nil
	}
	line, err := bufio.NewReader(io.LimitReader(os.Stdin, token.MaxTokenLen+1)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func (e *env) tokenInspectCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "inspect TOKEN|-",
		Short: "Decode a token and verify its signature against the control plane's JWKS",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := readToken(args[0])
			if err != nil {
				return err
			}
			// Trust anchors: the operator's bundle, or the agent's.
			bundleDir := e.credentials
			if dir != "" {
				bundleDir = dir
			}
			pem, err := os.ReadFile(filepath.Join(bundleDir, svidfile.BundleFile))
			if err != nil {
				return fmt.Errorf("need a trust bundle to fetch the JWKS securely: %w", err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
			resp, err := hc.Get(firstServer(e.server) + token.JWKSPath)
			if err != nil {
				return fmt.Errorf("fetch JWKS: %w", err)
			}
			defer resp.Body.Close()
			var jwks jose.JSONWebKeySet
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&jwks); err != nil {
				return fmt.Errorf("decode JWKS: %w", err)
			}
			out := map[string]any{}
			parts := strings.Split(raw, ".")
			if len(parts) == 3 {
				for i, name := range []string{"header", "claims"} {
					var v any
					if b, err := base64.RawURLEncoding.DecodeString(parts[i]); err == nil && json.Unmarshal(b, &v) == nil {
						out[name] = v
					}
				}
			}
			claims, verr := token.Parse(raw, func(kid string) (any, bool) {
				if ks := jwks.Key(kid); len(ks) == 1 {
					return ks[0].Key, true
				}
				return nil, false
			})
			out["signature_valid"] = verr == nil
			if verr != nil {
				out["error"] = verr.Error()
			} else {
				if err := claims.CheckTime(time.Now(), 0); err != nil {
					out["time_valid"], out["time_error"] = false, err.Error()
				} else {
					out["time_valid"], out["expires_in"] = true, time.Until(claims.Expiry.Time()).Round(time.Second).String()
				}
			}
			if err := printJSON(e.stdout, out); err != nil {
				return err
			}
			if verr != nil {
				return exitError{code: 1, err: fmt.Errorf("token does not verify")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "use this agent directory's trust bundle (default: the operator's)")
	return cmd
}

func (e *env) tokenRevokeCmd() *cobra.Command {
	var dir, reason string
	cmd := &cobra.Command{
		Use:   "revoke TOKEN|-",
		Short: "Revoke a token (as the operator, or as the agent in --dir); sub-agents it created are revoked too",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := readToken(args[0])
			if err != nil {
				return err
			}
			var c *client.Client
			if dir != "" {
				c, err = client.NewFromDir(e.server, dir)
			} else {
				c, err = e.operator()
			}
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), raw, reason); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "revoked")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "revoke as the agent in this credential directory")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	return cmd
}

func (e *env) tokenDelegateCmd() *cobra.Command {
	var (
		dir, out, resource, name string
		scopes                   []string
		ttl                      time.Duration
		asJSON                   bool
	)
	cmd := &cobra.Command{
		Use:   "delegate --dir AGENTDIR --resource URI --out SUBDIR [--scope S]... [--ttl D]",
		Short: "Create a sub-agent with an attenuated identity and token (RFC 8693 token exchange)",
		Long: `Create a sub-agent of the agent in --dir: a new SVID
spiffe://TD/agent/PARENT/sub/ID (its key generated here, written to --out)
and an access token whose scope is within the parent's, whose lifetime does
not exceed the parent token's, and whose act claim names every ancestor.
Revoking or disabling the parent revokes the sub-agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || out == "" || resource == "" {
				return fmt.Errorf("--dir, --resource and --out are required")
			}
			c, err := client.NewFromDir(e.server, dir)
			if err != nil {
				return err
			}
			parent, err := c.RequestToken(cmd.Context(), resource)
			if err != nil {
				return fmt.Errorf("parent token: %w", err)
			}
			sub, err := c.Delegate(cmd.Context(), parent.AccessToken, client.DelegateOptions{Scopes: scopes, TTL: ttl, Name: name, Dir: out})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, map[string]any{"spiffe_id": sub.ID.String(), "dir": out, "token": sub.Token})
			}
			fmt.Fprintf(e.stderr, "sub-agent %s (scope %q, expires in %ds); SVID in %s\n", sub.ID, sub.Token.Scope, sub.Token.ExpiresIn, out)
			fmt.Fprintln(e.stdout, sub.Token.AccessToken)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the parent agent's credential directory")
	f.StringVar(&resource, "resource", "", "the resource the parent's token (and so the sub-agent's) is for")
	f.StringVar(&out, "out", "", "directory for the sub-agent's SVID")
	f.StringVar(&name, "name", "", "the sub-agent's ID segment (default: random)")
	f.StringSliceVar(&scopes, "scope", nil, "scope for the sub-agent, within the parent's (repeatable)")
	f.DurationVar(&ttl, "ttl", 0, "lifetime, no longer than the parent token's remaining life")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
