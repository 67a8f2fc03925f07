package cli

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
)

func (e *env) manifestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Apply and inspect task manifests (approved and prohibited actions, escalation triggers, scope limits)",
		Long: `A task manifest declares one kind of task: what it may do (its baseline),
what it may never do, the elevations it may ask for and who approves them,
and its budgets. Applying one compiles it to Cedar policies that every
policy decision point evaluates for tasks of that kind. See docs/elevation.md.`,
	}
	cmd.AddCommand(e.manifestApplyCmd(), e.manifestListCmd(), e.manifestShowCmd())
	return cmd
}

func (e *env) manifestApplyCmd() *cobra.Command {
	var (
		file   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Apply a manifest (YAML) as its next version; its policies take effect at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			src, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			// Parsed here too, so that a mistake is reported before any call.
			if _, err := elevation.ParseManifest(src); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			m, err := c.ApplyManifest(cmd.Context(), src)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, m)
			}
			fmt.Fprintf(e.stdout, "applied manifest %s version %d (%d triggers, policies %s)\n", m.Name, m.Version, len(m.Triggers), m.Digest)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest file (YAML)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) manifestListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List manifests (latest versions)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			ms, err := c.Manifests(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ms)
			}
			rows := make([][]string, 0, len(ms))
			for _, m := range ms {
				triggers := ""
				for i, t := range m.Triggers {
					if i > 0 {
						triggers += ","
					}
					triggers += t.Name
				}
				rows = append(rows, []string{m.Name, strconv.FormatInt(m.Version, 10), m.MaxDuration, orDash(triggers), fmtTime(m.CreatedAt)})
			}
			return table(e.stdout, []string{"NAME", "VERSION", "MAX DURATION", "TRIGGERS", "APPLIED"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) manifestShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a manifest's source and the Cedar policies compiled from it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			m, err := c.Manifest(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, m)
			}
			fmt.Fprintf(e.stdout, "# manifest %s version %d, applied %s by %s\n%s\n# compiled policies (%s)\n%s", m.Name, m.Version,
				fmtTime(m.CreatedAt), m.CreatedBy, m.Source, m.Digest, m.Policies)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
