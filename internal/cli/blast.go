package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/report"
)

func (e *env) blastRadiusCmd() *cobra.Command {
	var (
		diff, at, html string
		maxGrowth      float64
		diffManifests  []string
		asJSON, asDOT  bool
	)
	cmd := &cobra.Command{
		Use:   "blast-radius [AGENT] [--diff CANDIDATE_POLICY_DIR]",
		Short: "Show what an agent (or every agent) can reach, and how",
		Long: `Compute every (action, resource) of the catalog an agent can reach by
asking the live PDP, and how: at baseline (its roles, now); only in
another context (tainted, a risk level); only at another time (a forbid
on the time of day, which an attacker waits out); only through an
elevation of a manifest it may open tasks of (and who must approve it);
only with arguments a permit's condition admits (the condition is shown);
or through a sub-agent. Each item is weighted by the resource's
sensitivity (low 1, medium 3, high 9; doubled for a write) and by the
easiest way to it (an elevation needing a human counts half, two humans a
quarter), giving a score per agent and for the fleet.

Without AGENT, every agent is analysed; agents with the same roles that no
policy names share one analysis.

--diff DIR is the review gate for a policy change: the same analysis with
the policy set in DIR in place of the live one, and what it would add or
remove for every agent. --diff-manifest FILE does the same for a task
manifest (in place of the stored one of its name): a new escalation
trigger is reach too. Either exits non-zero when the weight added across
the fleet is over --max-growth (default 0: any growth).

  bulkhead blast-radius alpha
  bulkhead blast-radius --diff ./policies --max-growth 10`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.BlastRadiusRequest{}
			if len(args) == 1 {
				req.Agent = args[0]
			}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--at: %w", err)
				}
				req.At = &t
			}
			for _, path := range diffManifests {
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				req.CandidateManifests = append(req.CandidateManifests, string(b))
			}
			if diff != "" {
				files, err := policy.LoadDir(diff)
				if err != nil {
					return err
				}
				for _, f := range files {
					req.Candidate = append(req.Candidate, api.PolicyFile(f))
				}
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			out, err := c.BlastRadius(cmd.Context(), req)
			if err != nil {
				return err
			}
			switch {
			case html != "":
				err = writeHTML(e.stdout, html, func(w io.Writer) error { return report.BlastRadius(w, out) })
			case asJSON:
				err = printJSON(e.stdout, out)
			case asDOT:
				err = printReachDOT(e.stdout, out.Fleet)
			case out.Diff != nil:
				err = printReachDiff(e.stdout, *out.Diff)
			case req.Agent != "" && len(out.Fleet.Agents) == 1:
				err = printReach(e.stdout, out.Fleet.Agents[0])
			default:
				err = printFleet(e.stdout, out)
			}
			if err != nil {
				return err
			}
			if out.Diff != nil && out.Diff.Grew() > maxGrowth {
				return fmt.Errorf("the candidate adds %g to the fleet's reach, over --max-growth %g", out.Diff.Grew(), maxGrowth)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&diff, "diff", "", "candidate policy directory: show what it would add and remove")
	cmd.Flags().StringArrayVar(&diffManifests, "diff-manifest", nil, "candidate task manifest (YAML; repeatable): show what it would add and remove")
	cmd.Flags().Float64Var(&maxGrowth, "max-growth", 0, "with --diff or --diff-manifest, fail when the added weight is over this")
	cmd.Flags().StringVar(&at, "at", "", "decide at this time (RFC 3339) instead of now")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&asDOT, "dot", false, "print a Graphviz graph of agents and what they reach")
	cmd.Flags().StringVar(&html, "html", "", "write the report as a self-contained HTML page to this file")
	return cmd
}

// printReach prints one agent's items.
func printReach(w io.Writer, r api.ReachReport) error {
	fmt.Fprintf(w, "%s: %d items, score %g\n", r.Agent, len(r.Items), r.Score)
	var rows [][]string
	for _, it := range r.Items {
		var ways []string
		for _, way := range it.Ways {
			s := way.Via
			switch {
			case way.Via == "elevation":
				s += " " + way.Manifest + "/" + way.Trigger + " (" + way.Approval + ")"
			case way.Via != "baseline":
				s += " " + way.Context
			}
			ways = append(ways, s)
		}
		rows = append(rows, []string{it.Action, it.Resource, strings.Join(ways, "; "), fmt.Sprint(it.Weight), strings.Join(it.Unless, "; ")})
	}
	if err := table(w, []string{"ACTION", "RESOURCE", "HOW", "WEIGHT", "UNLESS"}, rows); err != nil {
		return err
	}
	for _, s := range r.Secrets {
		fmt.Fprintf(w, "uses secret %s\n", s)
	}
	for _, h := range r.Egress {
		fmt.Fprintf(w, "reaches %s\n", h)
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "finding: %s\n", f)
	}
	return nil
}

// printFleet prints a line per agent.
func printFleet(w io.Writer, out api.BlastRadius) error {
	var rows [][]string
	for _, r := range out.Fleet.Agents {
		rows = append(rows, []string{r.Agent, fmt.Sprint(len(r.Items)), fmt.Sprint(r.Count("baseline")), fmt.Sprint(r.Count("elevation")),
			fmt.Sprint(len(r.Items) - r.Count("baseline") - r.Count("elevation")), fmt.Sprint(r.Score), fmt.Sprint(len(r.Findings))})
	}
	if err := table(w, []string{"AGENT", "ITEMS", "BASELINE", "ELEVATION", "OTHER", "SCORE", "FINDINGS"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(w, "fleet score %g (policy version %d, at %s, %d analyses)\n", out.Fleet.Score, out.Version, fmtTime(out.At), out.Fleet.Analyses)
	return nil
}

// printReachDiff prints what a candidate adds and removes.
func printReachDiff(w io.Writer, d api.ReachDiff) error {
	var rows [][]string
	for _, c := range d.Changes {
		for _, it := range c.Added {
			rows = append(rows, []string{"+", c.Agent, it.Action, it.Resource, it.Ways[0].Via, fmt.Sprint(it.Weight)})
		}
		for _, it := range c.Removed {
			rows = append(rows, []string{"-", c.Agent, it.Action, it.Resource, it.Ways[0].Via, fmt.Sprint(it.Weight)})
		}
	}
	if err := table(w, []string{"", "AGENT", "ACTION", "RESOURCE", "HOW", "WEIGHT"}, rows); err != nil {
		return err
	}
	fmt.Fprintf(w, "fleet score %g -> %g; added weight %g\n", d.Before, d.After, d.Grew())
	return nil
}

// printReachDOT prints agents and what they reach as a Graphviz graph.
func printReachDOT(w io.Writer, f api.ReachFleet) error {
	fmt.Fprintln(w, "digraph blast_radius {\n  rankdir=LR;")
	for _, r := range f.Agents {
		for _, it := range r.Items {
			style := "solid"
			if it.Ways[0].Via != "baseline" {
				style = "dashed"
			}
			fmt.Fprintf(w, "  %q -> %q [label=%q, style=%s];\n", r.Agent, it.Resource, it.Action+" ("+it.Ways[0].Via+")", style)
		}
	}
	_, err := fmt.Fprintln(w, "}")
	return err
}
