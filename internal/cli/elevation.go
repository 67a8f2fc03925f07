package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
)

func (e *env) elevationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "elevation",
		Short: "Request, approve, list and revoke elevations (grants beyond a task's baseline)",
		Long: `An agent requests one of its task's escalation triggers with a
justification. The approval policy may approve a low-sensitivity trigger
of an untainted task alone; otherwise humans approve with their own
operator credentials, never an agent. A grant is bounded by the trigger's
duration and uses and ends with its task.`,
	}
	cmd.AddCommand(e.elevationRequestCmd(), e.elevationDecideCmd(true), e.elevationDecideCmd(false), e.elevationListCmd(),
		e.elevationShowCmd(), e.elevationRevokeCmd(), e.elevationPolicyCmd())
	return cmd
}

func (e *env) elevationRequestCmd() *cobra.Command {
	var (
		dir, task, trigger, reason string
		asJSON                     bool
	)
	cmd := &cobra.Command{
		Use:   "request --dir AGENTDIR --task TASK --trigger NAME --reason TEXT",
		Short: "Request an escalation trigger of the agent's task and print the elevation id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if task == "" || trigger == "" || reason == "" {
				return fmt.Errorf("--task, --trigger and --reason are required")
			}
			c, err := e.agentClient(dir)
			if err != nil {
				return err
			}
			el, err := c.RequestElevation(cmd.Context(), task, trigger, reason)
			if err != nil {
				return explainTask(cmd.Context(), c, dir, task, err)
			}
			if asJSON {
				return printJSON(e.stdout, el)
			}
			fmt.Fprintln(e.stdout, el.ID)
			if el.Status == "active" {
				fmt.Fprintf(e.stderr, "elevation %s approved by policy; in force until %s\n", el.ID, fmtTime(el.ExpiresAt))
			} else {
				fmt.Fprintf(e.stderr, "elevation %s is %s: %s must approve it before %s\n", el.ID, el.Status, approvers(el.Approval), fmtTime(el.RequestExpiresAt))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the agent's credential directory")
	cmd.Flags().StringVar(&task, "task", "", "the agent's open task")
	cmd.Flags().StringVar(&trigger, "trigger", "", "an escalation trigger of the task's manifest")
	cmd.Flags().StringVar(&reason, "reason", "", "the justification an approver reads")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func approvers(mode string) string {
	switch mode {
	case "two_humans":
		return "two distinct humans"
	case "human":
		return "a human"
	}
	return "a human (the approval policy did not approve it alone)"
}

func (e *env) elevationDecideCmd(approve bool) *cobra.Command {
	var (
		reason      string
		yes, asJSON bool
	)
	verb, short := "deny", "Deny a pending elevation"
	if approve {
		verb, short = "approve", "Approve a pending elevation, as the operator whose credential is used"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID --reason TEXT",
		Short: short,
		Long: short + `. The request's provenance (agent, task, taint,
justification, what it grants) is shown first; on a terminal you are asked
to confirm unless --yes. The decision is bound to the request and its task
as shown: it cannot be replayed on another.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return fmt.Errorf("--reason is required (it is recorded with your identity)")
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			el, err := c.Elevation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			printProvenance(e.stderr, el)
			if !yes && isTerminal(os.Stdin) {
				fmt.Fprintf(e.stderr, "%s elevation %s? [y/N] ", verb, el.ID)
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return fmt.Errorf("not confirmed; nothing was decided")
				}
			}
			out, err := c.DecideElevation(cmd.Context(), el.ID, approve, api.ElevationDecision{Elevation: el.ID, Task: el.Task, Reason: reason})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			switch {
			case !approve:
				fmt.Fprintf(e.stdout, "denied elevation %s\n", out.ID)
			case out.Status == "active":
				uses := "any number of uses"
				if out.MaxUses > 0 {
					uses = fmt.Sprintf("%d uses", out.MaxUses)
				}
				fmt.Fprintf(e.stdout, "approved elevation %s: grant %s/%s in force until %s, %s\n", out.ID, out.Manifest, out.Trigger, fmtTime(out.ExpiresAt), uses)
			default:
				fmt.Fprintf(e.stdout, "approved elevation %s (%d approval(s)); it needs %s before it is in force\n", out.ID, len(out.Approvals), approvers(out.Approval))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with your identity)")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// printProvenance shows what an approver weighs.
func printProvenance(w io.Writer, el api.Elevation) {
	taint := "no"
	if el.Tainted {
		taint = "yes, when requested"
	}
	if t := el.TaskNow; t != nil && t.Tainted {
		taint = "YES: the task received output from " + t.TaintSource + " (untrusted); the request may be an injected instruction"
	}
	fmt.Fprintf(w, "elevation %s (%s)\n  agent:         %s\n  task:          %s (manifest %s)\n  trigger:       %s\n  justification: %q\n  tainted:       %s\n",
		el.ID, el.Status, el.Agent, el.Task, el.Manifest, el.Trigger, el.Justification, taint)
	if g := el.Grants; g != nil {
		uses := "any number of"
		if g.MaxUses > 0 {
			uses = fmt.Sprint(g.MaxUses)
		}
		fmt.Fprintf(w, "  grants:        %s uses for up to %s (approval: %s, sensitivity: %s)\n", uses, g.MaxDuration, g.Approval, g.Sensitivity)
		for _, r := range g.Grants {
			fmt.Fprintf(w, "                 %s on %s", strings.Join(r.Actions, ","), orDash(strings.Join(r.Resources, ",")))
			if r.When != "" {
				fmt.Fprintf(w, " when %s", r.When)
			}
			fmt.Fprintln(w)
		}
	}
	for _, a := range el.Approvals {
		fmt.Fprintf(w, "  approved by:   %s at %s: %q\n", a.Approver, fmtTime(a.At), a.Reason)
	}
}

func (e *env) elevationListCmd() *cobra.Command {
	var (
		active, standing, asJSON bool
		task                     string
		statuses                 []string
	)
	cmd := &cobra.Command{
		Use:   "list [--active|--standing]",
		Short: "List elevations; --active: grants in force; --standing: grants outside an open task (always 0)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if active && standing {
				return fmt.Errorf("--active and --standing are exclusive")
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			if standing {
				st, err := c.Standing(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(e.stdout, st)
				}
				return table(e.stdout, []string{"STANDING GRANTS", "ACTIVE GRANTS", "PENDING REQUESTS", "OPEN TASKS"},
					[][]string{{fmt.Sprint(st.Standing), fmt.Sprint(st.Active), fmt.Sprint(st.Pending), fmt.Sprint(st.OpenTasks)}})
			}
			list, err := c.Elevations(cmd.Context(), client.ElevationFilter{Task: task, Statuses: statuses, Active: active})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, 0, len(list))
			for _, el := range list {
				uses := fmt.Sprint(el.Uses)
				if el.MaxUses > 0 {
					uses += "/" + fmt.Sprint(el.MaxUses)
				}
				until := fmtTime(el.ExpiresAt)
				if el.Status == "pending" {
					until = fmtTime(el.RequestExpiresAt)
				}
				rows = append(rows, []string{el.ID, el.Status, el.Task, el.Manifest + "/" + el.Trigger, el.Agent, uses, until})
			}
			return table(e.stdout, []string{"ELEVATION", "STATUS", "TASK", "GRANT", "AGENT", "USES", "UNTIL"}, rows)
		},
	}
	cmd.Flags().BoolVar(&active, "active", false, "only grants in force now")
	cmd.Flags().BoolVar(&standing, "standing", false, "measure standing privilege instead of listing")
	cmd.Flags().StringVar(&task, "task", "", "only this task's elevations")
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "only these states (pending, active, denied, expired, exhausted, revoked, ended)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) elevationShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show an elevation with its provenance and approvals",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			el, err := c.Elevation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, el)
			}
			printProvenance(e.stdout, el)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) elevationRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "End a pending or active elevation at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			el, err := c.RevokeElevation(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked elevation %s (%s/%s of task %s)\n", el.ID, el.Manifest, el.Trigger, el.Task)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded)")
	return cmd
}

func (e *env) elevationPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show or replace the approval policy set (Cedar; who may approve what)",
	}
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the approval policy set in force (version 0 is Bulkhead's default) and its schema",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			p, err := c.ApprovalPolicy(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, p)
			}
			fmt.Fprintf(e.stdout, "# approval policy version %d (%s)\n", p.Version, p.Digest)
			for _, f := range p.Files {
				fmt.Fprintf(e.stdout, "# --- %s\n%s\n", f.Name, f.Content)
			}
			fmt.Fprintf(e.stdout, "# --- schema (fixed)\n%s", p.Schema)
			return nil
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var path string
	apply := &cobra.Command{
		Use:   "apply -f FILE|DIR",
		Short: "Replace the approval policy set with the .cedar files given",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := readCedarFiles(path)
			if err != nil {
				return err
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			p, err := c.ApplyApprovalPolicy(cmd.Context(), files)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "applied approval policy version %d (%d files, %s)\n", p.Version, len(files), p.Digest)
			return nil
		},
	}
	apply.Flags().StringVarP(&path, "file", "f", "", "a .cedar file or a directory of them")
	cmd.AddCommand(show, apply)
	return cmd
}

// readCedarFiles reads one .cedar file, or the .cedar files of a
// directory (not recursively).
func readCedarFiles(path string) ([]api.PolicyFile, error) {
	if path == "" {
		return nil, fmt.Errorf("-f FILE|DIR is required")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	names := []string{path}
	if st.IsDir() {
		if names, err = filepath.Glob(filepath.Join(path, "*.cedar")); err != nil {
			return nil, err
		}
	}
	var out []api.PolicyFile
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, api.PolicyFile{Name: filepath.Base(n), Content: string(b)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no .cedar files in %s", path)
	}
	return out, nil
}
