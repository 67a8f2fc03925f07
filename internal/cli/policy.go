package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func (e *env) policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage Cedar policies: apply, version, shadow, test and explain",
		Long: `Policies decide every action an agent takes. A policy set is a directory
of .cedar files (and optional .cedarschema files extending Bulkhead's
schema); each apply is validated whole and stored as a numbered version.`,
	}
	cmd.AddCommand(e.policyApplyCmd(), e.policyVersionsCmd(), e.policyShowCmd(), e.policyRollbackCmd(),
		e.policyPromoteCmd(), e.policyShadowStopCmd(), e.policyShadowReportCmd(), e.policyExplainCmd(),
		e.policyTestCmd(), e.policySchemaCmd())
	return cmd
}

func (e *env) policyApplyCmd() *cobra.Command {
	var (
		dir, description string
		shadow, asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f DIR",
		Short: "Validate a policy set and make it the live (or, with --shadow, the candidate) version",
		Long: `Apply the .cedar and .cedarschema files under DIR (or one file) as a new
version. The set is validated against the schema first; any error is
reported with file, line and column and nothing changes.

With --shadow the set becomes the candidate: it is evaluated beside the
live set on every real request, only the live set is enforced, and
differences are recorded ('bulkhead policy shadow-report'). Promote it with
'bulkhead policy promote'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("-f DIR is required")
			}
			files, err := policy.LoadDir(dir)
			if err != nil {
				return err
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			req := api.PolicyApplyRequest{Shadow: shadow, Description: description}
			for _, f := range files {
				req.Files = append(req.Files, api.PolicyFile(f))
			}
			// What the set changes in the fleet's reach, asked before it is
			// applied (after, it is the live set).
			reach, reachErr := c.BlastRadius(cmd.Context(), api.BlastRadiusRequest{Candidate: req.Files})
			v, err := c.ApplyPolicy(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, v)
			}
			role := "live"
			if shadow {
				role = "shadow candidate"
			}
			fmt.Fprintf(e.stdout, "applied version %d (%d policies from %d files, %s) as the %s version\n", v.Version, v.Policies, len(files), v.Digest, role)
			switch {
			case reachErr != nil:
				fmt.Fprintf(e.stdout, "blast radius: not computed: %v\n", reachErr)
			case reach.Diff != nil:
				added, removed := 0, 0
				for _, ch := range reach.Diff.Changes {
					added, removed = added+len(ch.Added), removed+len(ch.Removed)
				}
				fmt.Fprintf(e.stdout, "blast radius: %d items added and %d removed across %d agents; fleet score %g -> %g (bulkhead blast-radius --diff %s shows each)\n",
					added, removed, len(reach.Diff.Changes), reach.Diff.Before, reach.Diff.After, dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "file", "f", "", "policy directory (or one .cedar file)")
	cmd.Flags().BoolVar(&shadow, "shadow", false, "evaluate beside the live set instead of replacing it")
	cmd.Flags().StringVar(&description, "description", "", "what this version changes (stored with it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) policyVersionsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "versions",
		Short: "List policy versions and which are in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			vs, err := c.PolicyVersions(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, vs)
			}
			rows := make([][]string, 0, len(vs.Versions))
			for _, v := range vs.Versions {
				state := "-"
				switch {
				case v.Live:
					state = "live"
				case v.Candidate:
					state = "shadow"
				}
				rows = append(rows, []string{strconv.FormatInt(v.Version, 10), state, strconv.Itoa(v.Policies),
					fmtTime(v.CreatedAt), v.CreatedBy, oneLine(v.Description)})
			}
			return table(e.stdout, []string{"VERSION", "STATE", "POLICIES", "CREATED", "BY", "DESCRIPTION"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) policyShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [live|shadow|VERSION]",
		Short: "Print a policy version's files (default: the live version)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			which := "live"
			if len(args) == 1 {
				which = args[0]
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			v, err := c.PolicyVersion(cmd.Context(), which)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, v)
			}
			fmt.Fprintf(e.stdout, "// version %d: %d policies, %s, applied %s by %s\n", v.Version, v.Policies, v.Digest, fmtTime(v.CreatedAt), v.CreatedBy)
			for _, f := range v.Files {
				fmt.Fprintf(e.stdout, "\n// ---- %s ----\n%s", f.Name, f.Content)
				if !strings.HasSuffix(f.Content, "\n") {
					fmt.Fprintln(e.stdout)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) policyRollbackCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback VERSION",
		Short: "Make a stored version live again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n < 1 {
				return fmt.Errorf("VERSION must be a version number (see 'bulkhead policy versions')")
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			st, err := c.RollbackPolicy(cmd.Context(), n)
			if err != nil {
				return err
			}
			return e.printState(st, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) printState(st api.PolicyState, asJSON bool) error {
	if asJSON {
		return printJSON(e.stdout, st)
	}
	shadow := "none"
	if st.Shadow != 0 {
		shadow = strconv.FormatInt(st.Shadow, 10)
	}
	fmt.Fprintf(e.stdout, "live version %d, shadow version %s\n", st.Live, shadow)
	return nil
}

func (e *env) policyPromoteCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "promote",
		Short: "Make the shadow candidate the live version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			st, err := c.PromotePolicy(cmd.Context())
			if err != nil {
				return err
			}
			return e.printState(st, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) policyShadowStopCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "shadow-stop",
		Short: "Stop evaluating the shadow candidate (the live version is unchanged)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			st, err := c.StopShadow(cmd.Context())
			if err != nil {
				return err
			}
			return e.printState(st, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) policyShadowReportCmd() *cobra.Command {
	var (
		version int64
		limit   int
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "shadow-report",
		Short: "Show the requests whose decision the shadow candidate would flip",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			r, err := c.ShadowReport(cmd.Context(), version, limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, r)
			}
			fmt.Fprintf(e.stdout, "shadow version %d: %d requests evaluated, %d would flip (%d allow→deny, %d deny→allow)\n",
				r.ShadowVersion, r.Evaluated, r.Flipped, r.AllowToDeny, r.DenyToAllow)
			if r.Unrecorded > 0 {
				fmt.Fprintf(e.stdout, "warning: %d differences were found but not recorded (overload)\n", r.Unrecorded)
			}
			if len(r.Differences) == 0 {
				return nil
			}
			fmt.Fprintln(e.stdout)
			rows := make([][]string, 0, len(r.Differences))
			for _, d := range r.Differences {
				rows = append(rows, []string{fmtTime(d.Time), d.Live + "→" + d.Shadow, d.Principal, d.Action, d.Resource,
					strings.Join(d.ShadowReasons, ","), d.DecisionID})
			}
			return table(e.stdout, []string{"TIME", "FLIP", "PRINCIPAL", "ACTION", "RESOURCE", "SHADOW REASONS", "DECISION"}, rows)
		},
	}
	cmd.Flags().Int64Var(&version, "version", 0, "shadow version to report on (default: the current one)")
	cmd.Flags().IntVar(&limit, "limit", 50, "most recent differences to list (0 for all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// entityArg reads a Cedar entity reference, or for a principal an agent
// name or SPIFFE ID.
func entityArg(s, trustDomain string, principal bool) (api.AuthZENEntity, error) {
	if typ, id, ok := strings.Cut(s, "::"); ok && strings.HasPrefix(id, `"`) {
		unq, err := strconv.Unquote(id)
		if err != nil {
			return api.AuthZENEntity{}, fmt.Errorf("%q is not a Cedar entity reference like Tool::\"docs/search\"", s)
		}
		return api.AuthZENEntity{Type: typ, ID: unq}, nil
	}
	if principal {
		if strings.HasPrefix(s, "spiffe://") {
			return api.AuthZENEntity{Type: "Agent", ID: s}, nil
		}
		return api.AuthZENEntity{Type: "Agent", ID: "spiffe://" + trustDomain + "/agent/" + s}, nil
	}
	return api.AuthZENEntity{}, fmt.Errorf("%q is not a Cedar entity reference like Tool::\"docs/search\"", s)
}

func (e *env) printExplanation(ex api.PolicyExplanation) {
	fmt.Fprintf(e.stdout, "decision:   %s (policy version %d, decision %s)\n", strings.ToUpper(ex.Decision), ex.Version, ex.DecisionID)
	fmt.Fprintf(e.stdout, "request:    principal %s\n            action    %s\n            resource  %s\n            context   %s\n",
		ex.Principal, ex.Action, ex.Resource, ex.Context)
	fmt.Fprintf(e.stdout, "evaluated:  %d of %d policies (the rest cannot apply to this request)\n", ex.Considered, ex.Total)
	switch {
	case len(ex.Determining) > 0:
		fmt.Fprintf(e.stdout, "\ndetermined by:\n")
	case len(ex.Errors) > 0:
		fmt.Fprintf(e.stdout, "\ndenied because a policy failed to evaluate\n")
	default:
		fmt.Fprintf(e.stdout, "\nno policy matched: denied by default\n")
	}
	for _, p := range ex.Determining {
		fmt.Fprintf(e.stdout, "\n  %s %s (%s)\n%s\n", p.Effect, p.ID, p.Position, indent(p.Text, "    "))
	}
	if len(ex.Errors) > 0 {
		fmt.Fprintf(e.stdout, "\nerrors:\n")
	}
	for _, p := range ex.Errors {
		fmt.Fprintf(e.stdout, "\n  %s (%s): %s\n%s\n", p.ID, p.Position, p.Error, indent(p.Text, "    "))
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func (e *env) policySchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the Cedar schema that ships with Bulkhead (extend it with .cedarschema files)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(e.stdout, policy.BaseSchema())
			return nil
		},
	}
}
