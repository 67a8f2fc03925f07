package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
)

func (e *env) taskCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Open, complete and inspect tasks (an agent's unit of work under a manifest)",
		Long: `An agent opens a task against a manifest with its own SVID; the task id goes
into its tokens ('bulkhead token get --task'), and every call made with them
is decided in the task. Completing, cancelling or timing out the task
returns the agent to baseline: every grant of the task stops at once.`,
	}
	cmd.AddCommand(e.taskStartCmd(), e.taskCompleteCmd(), e.taskCancelCmd(), e.taskShowCmd(), e.taskListCmd())
	return cmd
}

// agentClient is the API client of the agent whose credential is in dir.
func (e *env) agentClient(dir string) (*client.Client, error) {
	if dir == "" {
		return nil, fmt.Errorf("--dir AGENTDIR (the agent's credential directory) is required")
	}
	return client.NewFromDir(e.server, dir)
}

func (e *env) taskStartCmd() *cobra.Command {
	var (
		dir, manifest, description string
		asJSON                     bool
	)
	cmd := &cobra.Command{
		Use:   "start --dir AGENTDIR --manifest NAME",
		Short: "Open a task for the agent in AGENTDIR and print its id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if manifest == "" {
				return fmt.Errorf("--manifest NAME is required")
			}
			c, err := e.agentClient(dir)
			if err != nil {
				return err
			}
			t, err := c.StartTask(cmd.Context(), manifest, description)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, t)
			}
			fmt.Fprintln(e.stdout, t.ID)
			fmt.Fprintf(e.stderr, "opened task %s (manifest %s version %d) until %s\n", t.ID, t.Manifest, t.ManifestVersion, fmtTime(t.Deadline))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the agent's credential directory")
	cmd.Flags().StringVar(&manifest, "manifest", "", "the task's manifest")
	cmd.Flags().StringVar(&description, "description", "", "what the task is for")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) taskCompleteCmd() *cobra.Command {
	var (
		dir, reason string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "complete --dir AGENTDIR TASK",
		Short: "Complete the agent's task: back to baseline, every grant of it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.agentClient(dir)
			if err != nil {
				return err
			}
			t, err := c.CompleteTask(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, t)
			}
			fmt.Fprintf(e.stdout, "completed task %s: the agent is back at baseline\n", t.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the agent's credential directory")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) taskCancelCmd() *cobra.Command {
	var (
		dir, reason string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "cancel TASK --reason TEXT",
		Short: "Cancel a task (as an operator, or as its agent with --dir): every grant of it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.clientFor(dir)
			if err != nil {
				return err
			}
			t, err := c.CancelTask(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, t)
			}
			fmt.Fprintf(e.stdout, "cancelled task %s: its agent is back at baseline\n", t.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "act as the agent in this credential directory instead of the operator")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// clientFor is the agent's client with dir, else the operator's.
func (e *env) clientFor(dir string) (*client.Client, error) {
	if dir != "" {
		return e.agentClient(dir)
	}
	return e.operator()
}

func (e *env) taskShowCmd() *cobra.Command {
	var (
		dir    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "show TASK",
		Short: "Show a task: status, deadline, taint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.clientFor(dir)
			if err != nil {
				return err
			}
			t, err := c.Task(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, t)
			}
			return table(e.stdout, []string{"FIELD", "VALUE"}, taskRows(t))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "act as the agent in this credential directory instead of the operator")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func taskRows(t api.Task) [][]string {
	taint := "no"
	if t.Tainted {
		taint = "yes, by output of " + t.TaintSource + " at " + fmtTime(t.TaintedAt)
	}
	rows := [][]string{{"id", t.ID}, {"agent", t.Agent}, {"manifest", fmt.Sprintf("%s (version %d)", t.Manifest, t.ManifestVersion)},
		{"status", t.Status}, {"tainted", taint}, {"opened", fmtTime(t.OpenedAt)}, {"deadline", fmtTime(t.Deadline)}}
	if !t.EndedAt.IsZero() {
		rows = append(rows, []string{"ended", fmtTime(t.EndedAt) + " by " + t.EndedBy + ": " + orDash(t.EndReason)})
	}
	return rows
}

func (e *env) taskListCmd() *cobra.Command {
	var open, asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			ts, err := c.Tasks(cmd.Context(), open)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, ts)
			}
			rows := make([][]string, 0, len(ts))
			for _, t := range ts {
				taint := "-"
				if t.Tainted {
					taint = "tainted"
				}
				rows = append(rows, []string{t.ID, t.Status, t.Manifest, t.Agent, taint, fmtTime(t.Deadline)})
			}
			return table(e.stdout, []string{"TASK", "STATUS", "MANIFEST", "AGENT", "TAINT", "DEADLINE"}, rows)
		},
	}
	cmd.Flags().BoolVar(&open, "open", false, "only open tasks")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
