package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bulkhead-dev/bulkhead/internal/secret"
)

func (e *env) secretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Keep upstream credentials that gateways inject (agents never see them)",
		Long: `Secrets are upstream credentials (an MCP server's token, an API key) that
gateways inject into the requests they forward, so that agents never hold
them. They are encrypted at rest; operators set, list and delete them, and
only gateways can read a value back.`,
	}
	var (
		asJSON bool
		noTrim bool
	)
	set := &cobra.Command{
		Use:   "set NAME < value",
		Short: "Set a secret from standard input (replacing any current value)",
		Long: `Set a secret from standard input. The value is never taken from an argument
or a flag, so that it does not land in shell history or the process list.
One trailing newline is removed (unless --no-trim); an empty value is
refused. On a terminal, input is not echoed.`,
		Example: `  printf %s "$TOKEN" | bulkhead secret set files-token
  bulkhead secret set files-token < token.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			// Check the name before reading anything.
			if err := secret.ValidateName(name); err != nil {
				return err
			}
			value, err := readSecretValue(os.Stdin, e.stderr, name, !noTrim)
			if err != nil {
				return err
			}
			defer clear(value)
			c, err := e.operator()
			if err != nil {
				return err
			}
			s, err := c.SetSecret(cmd.Context(), name, value)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, s)
			}
			fmt.Fprintf(e.stdout, "set secret %s (version %d)\n", s.Name, s.Version)
			return nil
		},
	}
	set.Flags().BoolVar(&noTrim, "no-trim", false, "keep a trailing newline as part of the value")
	set.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list := &cobra.Command{
		Use:   "list",
		Short: "List secrets (names and versions, never values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			ss, err := c.ListSecrets(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ss)
			}
			rows := make([][]string, 0, len(ss))
			for _, s := range ss {
				rows = append(rows, []string{s.Name, strconv.FormatInt(s.Version, 10), fmtTime(s.UpdatedAt), s.UpdatedBy})
			}
			return table(e.stdout, []string{"NAME", "VERSION", "UPDATED", "UPDATED BY"}, rows)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	remove := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete a secret (gateways that reference it refuse those calls from then on)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			if err := c.DeleteSecret(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted secret %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(set, list, remove)
	return cmd
}

// readSecretValue reads a secret from in: without echo from a terminal
// (prompting on stderr), else everything up to EOF, bounded. One trailing
// newline goes if trim is set.
func readSecretValue(in *os.File, stderr io.Writer, name string, trim bool) ([]byte, error) {
	var (
		value []byte
		err   error
	)
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		fmt.Fprintf(stderr, "value of secret %s (input hidden): ", name)
		value, err = term.ReadPassword(fd)
		fmt.Fprintln(stderr)
	} else {
		// +2: room for a trailing CRLF on a value at the limit.
		value, err = io.ReadAll(io.LimitReader(in, secret.MaxValueSize+3))
	}
	if err != nil {
		return nil, fmt.Errorf("read the value from standard input: %w", err)
	}
	if trim {
		if v, ok := bytes.CutSuffix(value, []byte("\n")); ok {
			value, _ = bytes.CutSuffix(v, []byte("\r"))
		}
	}
	switch {
	case len(value) == 0:
		return nil, errors.New("the value is empty: pipe it on standard input, e.g. 'bulkhead secret set NAME < file' (never as an argument)")
	case len(value) > secret.MaxValueSize:
		clear(value)
		return nil, fmt.Errorf("the value is over %d bytes", secret.MaxValueSize)
	}
	return value, nil
}
