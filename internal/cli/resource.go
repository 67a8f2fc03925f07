package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func (e *env) resourceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resource",
		Short: "Register the APIs (OAuth resources, token audiences) agents may get tokens for",
	}
	var (
		scopes []string
		asJSON bool
	)
	add := &cobra.Command{
		Use:   "add URI [--scope SCOPE]...",
		Short: "Register a resource; --scope limits the scopes tokens for it may carry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			r, err := c.AddResource(cmd.Context(), args[0], scopes)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			fmt.Fprintf(e.stdout, "registered resource %s (scopes: %s)\n", r.URI, orAny(r.Scopes))
			return nil
		},
	}
	add.Flags().StringSliceVar(&scopes, "scope", nil, "scope the resource accepts (repeatable; none: any)")
	add.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list := &cobra.Command{
		Use:   "list",
		Short: "List registered resources",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			rs, err := c.ListResources(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rs)
			}
			rows := make([][]string, 0, len(rs))
			for _, r := range rs {
				rows = append(rows, []string{r.URI, orAny(r.Scopes), fmtTime(r.CreatedAt)})
			}
			return table(e.stdout, []string{"URI", "SCOPES", "CREATED"}, rows)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	remove := &cobra.Command{
		Use:   "remove URI",
		Short: "Unregister a resource (tokens already issued expire on their own)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			if err := c.RemoveResource(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed resource %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

func orAny(scopes []string) string {
	if len(scopes) == 0 {
		return "any"
	}
	return strings.Join(scopes, " ")
}
