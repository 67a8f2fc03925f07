package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (e *env) agentRoleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Assign agents to the roles policies refer to (Role::\"NAME\")",
		Long: `An agent in a role is "in" Role::"ROLE" for policy, and so are its
sub-agents. Changes take effect on the next decision.`,
	}
	cmd.AddCommand(e.agentRoleAddCmd(), e.agentRoleRemoveCmd(), e.agentRoleListCmd())
	return cmd
}

func (e *env) agentRoleAddCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add NAME ROLE",
		Short: "Put an agent in a role",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			a, err := c.AddAgentRole(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, a)
			}
			fmt.Fprintf(e.stdout, "agent %s is in role %s\n", a.Agent, a.Role)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) agentRoleRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME ROLE",
		Short: "Take an agent out of a role",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			if err := c.RemoveAgentRole(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "agent %s is no longer in role %s\n", args[0], args[1])
			return nil
		},
	}
}

func (e *env) agentRoleListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [NAME]",
		Short: "List role assignments (of one agent, or all)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			agent := ""
			if len(args) == 1 {
				agent = args[0]
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			list, err := c.AgentRoles(cmd.Context(), agent)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, 0, len(list))
			for _, a := range list {
				rows = append(rows, []string{a.Agent, a.Role, fmtTime(a.CreatedAt), a.CreatedBy})
			}
			return table(e.stdout, []string{"AGENT", "ROLE", "ASSIGNED", "BY"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
