package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func (e *env) policyTestCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test FILE...",
		Short: "Run policy unit tests locally; exit 1 if any case fails",
		Long: `Run policy unit tests: each FILE (YAML or JSON) names a policy directory,
optionally a tool catalog and agents' roles, and cases of request and
expected decision (and, optionally, the exact determining policies). No
server is needed, so a policy repository can gate merges in CI.

  policies: ../policies
  tools: ../tools.yaml
  agents:
    alpha: [reader]
  cases:
    - name: readers may search the docs
      principal: alpha
      action: call_tool
      resource: Tool::"docs/search"
      context: {input: {query: setup}}
      expect: allow
      reasons: [reader-docs]

Exit status: 0 if every case passes, 1 if any fails, 2 if a file or its
policies cannot be loaded.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			var (
				reports       []policy.TestReport
				failed, total int
			)
			for _, path := range args {
				rep, err := policy.RunTestFile(path, now)
				if err != nil {
					var errs policy.Errors
					if errors.As(err, &errs) {
						err = fmt.Errorf("%s: policies do not load: %w", path, err)
					}
					return exitError{code: 2, err: err}
				}
				reports = append(reports, rep)
				failed += rep.Failed
				total += rep.Passed + rep.Failed
			}
			if asJSON {
				if err := printJSON(e.stdout, reports); err != nil {
					return err
				}
			} else {
				for _, rep := range reports {
					for _, r := range rep.Results {
						if r.Passed {
							fmt.Fprintf(e.stdout, "ok    %s: %s\n", rep.File, r.Name)
							continue
						}
						fmt.Fprintf(e.stdout, "FAIL  %s: %s\n      %s\n", rep.File, r.Name, r.Problem)
						for _, er := range r.Errors {
							fmt.Fprintf(e.stdout, "      error in %s: %s\n", er.PolicyID, er.Message)
						}
					}
				}
				fmt.Fprintf(e.stdout, "%d of %d cases passed\n", total-failed, total)
			}
			if failed > 0 {
				return exitError{code: 1, err: fmt.Errorf("%d policy test case(s) failed", failed)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	return cmd
}
