package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/assess"
	"github.com/bulkhead-dev/bulkhead/internal/report"
)

// stages names the migration path's stages.
var stages = []string{
	"0: establish the keystone (per-agent identity, short-lived tokens)",
	"1: Foundation agency and containment",
	"2: the Enterprise midpoint",
	"3: Advanced, where the threat model demands it",
}

func (e *env) assessCmd() *cobra.Command {
	var (
		require, html string
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "assess [--require TIER]",
		Short: "Show which tier each control surface really reaches, with the evidence",
		Long: `Judge each control surface of the Zero Trust ladder — identity, service
auth, permission model, privilege scoping, isolation — against the criteria
of each tier (foundation, enterprise, advanced), from live state: the
agents, the audit log (what gateways reported when they started, what was
issued, renewed, revoked and decided), the live policies and catalog, the
manifests and grants, and every agent's blast radius. A criterion not met
names what to fix. The deployment's stage on the migration path, the
criteria between it and the next stage, and the controls that only
throttle (and so count toward no tier) follow.

--require TIER exits non-zero when any surface is below TIER, for CI.

  bulkhead assess
  bulkhead assess --require enterprise`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if require != "" && assess.Rank(require) < 1 {
				return fmt.Errorf("--require: %q is not foundation, enterprise or advanced", require)
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			a, err := c.Assess(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case html != "":
				err = writeHTML(e.stdout, html, func(w io.Writer) error { return report.Assessment(w, a) })
			case asJSON:
				err = printJSON(e.stdout, a)
			default:
				err = printAssessment(e.stdout, a)
			}
			if err != nil {
				return err
			}
			if require != "" {
				var below []string
				for _, s := range a.Surfaces {
					if assess.Rank(s.Tier) < assess.Rank(require) {
						below = append(below, s.Surface+" ("+s.Tier+")")
					}
				}
				if len(below) > 0 {
					return fmt.Errorf("below %s: %s", require, strings.Join(below, ", "))
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&require, "require", "", "exit non-zero if any surface is below this tier")
	cmd.Flags().StringVar(&html, "html", "", "write the assessment as a self-contained HTML page to this file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printAssessment(w io.Writer, a api.Assessment) error {
	var rows [][]string
	for _, s := range a.Surfaces {
		met := 0
		for _, c := range s.Criteria {
			if c.Met {
				met++
			}
		}
		rows = append(rows, []string{s.Surface, s.Tier, fmt.Sprintf("%d/%d", met, len(s.Criteria))})
	}
	if err := table(w, []string{"SURFACE", "TIER", "CRITERIA MET"}, rows); err != nil {
		return err
	}
	state := "in progress"
	if len(a.Next) == 0 {
		state = "complete"
	}
	fmt.Fprintf(w, "\nstage %s (%s)\n", stages[a.Stage], state)
	for _, s := range a.Surfaces {
		fmt.Fprintf(w, "\n%s:\n", s.Surface)
		for _, c := range s.Criteria {
			mark := "no "
			if c.Met {
				mark = "yes"
			}
			fmt.Fprintf(w, "  %s  %-10s  %s — %s\n", mark, c.Tier, c.Name, c.Evidence)
			for _, b := range c.Blockers {
				fmt.Fprintf(w, "         - %s\n", b)
			}
		}
	}
	if len(a.Next) > 0 {
		fmt.Fprintf(w, "\nto complete stage %d:\n", a.Stage)
		for _, c := range a.Next {
			fmt.Fprintf(w, "  - %s, %s: %s\n", c.Surface, c.Tier, c.Name)
		}
	}
	if len(a.Lint) > 0 {
		fmt.Fprintln(w, "\nonly throttles (impossible, not tedious):")
		for _, l := range a.Lint {
			fmt.Fprintf(w, "  - %s\n", l)
		}
	}
	return nil
}

func (e *env) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Summarize the deployment on one screen",
		Long: `Show the control plane replicas that started in the last day, the
gateways that reported what they serve, agents by status, approvals
waiting and grants in force, the tier of each control surface and the
migration stage (see 'bulkhead assess'), the audit log's latest signed
checkpoint, and alerts: sandbox refusals, standing grants, sub-agents that
reach beyond their parents, a stale checkpoint, controls that only
throttle.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, st)
			}
			return printStatus(e.stdout, st)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(w io.Writer, st api.Status) error {
	var agents []string
	for _, s := range []string{"active", "disabled", "revoked"} {
		if n := st.Agents[s]; n > 0 {
			agents = append(agents, fmt.Sprintf("%d %s", n, s))
		}
	}
	var tiers []string
	for _, s := range assess.Surfaces {
		tiers = append(tiers, s+" "+st.Tiers[s])
	}
	orNone := func(list []string) string {
		if len(list) == 0 {
			return "none"
		}
		return strings.Join(list, ", ")
	}
	rows := [][]string{
		{"replicas", orNone(st.Replicas) + " (started in the last day)"},
		{"gateways", orNone(st.Gateways)},
		{"agents", orNone(agents)},
		{"approvals", fmt.Sprintf("%d pending; %d grants in force", st.PendingApprovals, st.ActiveGrants)},
		{"tiers", strings.Join(tiers, "; ")},
		{"stage", stages[st.Stage]},
		{"checkpoint", fmt.Sprintf("%d entries, signed %s", st.CheckpointSize, fmtTime(st.CheckpointAt))},
	}
	if err := table(w, []string{"", ""}, rows); err != nil {
		return err
	}
	if len(st.Alerts) == 0 {
		_, err := fmt.Fprintln(w, "no alerts")
		return err
	}
	fmt.Fprintln(w, "alerts:")
	for _, a := range st.Alerts {
		fmt.Fprintf(w, "  - %s\n", a)
	}
	return nil
}

// writeHTML writes a page to path (0644: a report, not a secret, though
// operators may want to keep it to themselves) and says so.
func writeHTML(w io.Writer, path string, render func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := render(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "wrote %s\n", path)
	return err
}
