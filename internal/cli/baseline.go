package cli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

func (e *env) agentBaselineCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "baseline NAME",
		Short: "Show an agent's behaviour learned from the audit log",
		Long: `Replay the gateway's decision records of an agent into its baseline: the
tools it calls and the shapes of their arguments, how often (per active
hour and at its busiest), at which UTC hours and weekdays, and how often
it is denied. Until it has 50 calls
over a day it is learning. See docs/baselines.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			b, err := c.AgentBaseline(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, b)
			}
			state := "learned"
			if b.Learning {
				state = "learning"
			}
			fmt.Fprintf(e.stdout, "%s: %d calls from %s to %s (%s); %.1f per active hour, busiest hour %d; %d denied\n",
				b.Agent, b.Calls, fmtTime(b.Since), fmtTime(b.Until), state, b.PerHour, b.PeakPerHour, b.Denials)
			fmt.Fprintf(e.stdout, "rate %.1f calls per active hour (EWMA); tasks read at most %d bytes, %d on average\n",
				b.RateEWMA, b.MaxBytesPerTask, b.MeanBytesPerTask)
			if b.Basis != "" {
				fmt.Fprintf(e.stdout, "its own baseline is still learning: judged by its %s\n", b.Basis)
			}
			tools := make([]string, 0, len(b.Tools))
			for t := range b.Tools {
				tools = append(tools, t)
			}
			slices.Sort(tools)
			var rows [][]string
			for _, t := range tools {
				rows = append(rows, []string{t, fmt.Sprint(b.Tools[t]), fmt.Sprint(b.BytesPerCall[t]), shapes(b.Shapes[t])})
			}
			if err := table(e.stdout, []string{"RESOURCE", "CALLS", "BYTES/CALL", "ARGUMENT SHAPES"}, rows); err != nil {
				return err
			}
			fmt.Fprint(e.stdout, "hours (UTC):")
			for h, n := range b.Hours {
				if n > 0 {
					fmt.Fprintf(e.stdout, " %02d:%d", h, n)
				}
			}
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// shapes lists a resource's argument shapes, the most used first (at most
// three, and how many more).
func shapes(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	out := keys[:min(3, len(keys))]
	s := strings.Join(out, ", ")
	if more := len(keys) - len(out); more > 0 {
		s += fmt.Sprintf(" (+%d)", more)
	}
	return s
}
