package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func (e *env) toolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tool",
		Short: "Describe the tool servers, tools and routes that policies refer to",
	}
	cmd.AddCommand(e.toolApplyCmd(), e.toolListCmd())
	return cmd
}

func (e *env) toolApplyCmd() *cobra.Command {
	var (
		file   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Replace the tool catalog with the one described in FILE (YAML or JSON)",
		Long: `Replace the tool catalog: servers, their tools (MCP) and routes (HTTP),
with the attributes policies read (sensitivity: low, medium or high;
untrusted_output) and the groups they belong to. The file describes the
whole catalog; anything it leaves out is removed.

  servers:
    - name: docs
      sensitivity: low
      untrusted_output: false
      groups: [docs]
      tools:
        - name: search
        - name: delete_page
          sensitivity: high`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			cat, err := policy.ParseCatalog(file, b)
			if err != nil {
				return err
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			out, err := c.ApplyTools(cmd.Context(), policy.CatalogJSON(cat))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			tools, routes := 0, 0
			for _, s := range out.Servers {
				tools += len(s.Tools)
				routes += len(s.Routes)
			}
			fmt.Fprintf(e.stdout, "applied tool catalog: %d servers, %d tools, %d routes\n", len(out.Servers), tools, routes)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "catalog file (YAML or JSON)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the applied catalog as JSON")
	return cmd
}

func (e *env) toolListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List servers, tools and routes with their policy attributes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			cat, err := c.Tools(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, cat)
			}
			var rows [][]string
			row := func(uid, sens string, untrusted *bool, groups []string) {
				rows = append(rows, []string{uid, sens, strconv.FormatBool(untrusted == nil || *untrusted), strings.Join(groups, ",")})
			}
			for _, s := range cat.Servers {
				row(`ToolServer::"`+s.Name+`"`, s.Sensitivity, s.UntrustedOutput, s.Groups)
				for _, list := range []struct {
					typ     string
					entries []api.ToolEntry
				}{{"Tool", s.Tools}, {"Route", s.Routes}} {
					for _, t := range list.entries {
						row(list.typ+`::"`+s.Name+"/"+t.Name+`"`, t.Sensitivity, t.UntrustedOutput, t.Groups)
					}
				}
			}
			return table(e.stdout, []string{"ENTITY", "SENSITIVITY", "UNTRUSTED OUTPUT", "GROUPS"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
