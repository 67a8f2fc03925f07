package policy_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The example policy sets ship with their unit tests; both must stay
// valid and passing.
func TestExamplePolicyTestsPass(t *testing.T) {
	files, err := filepath.Glob("../../examples/policies/tests/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policy tests: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			rep, err := policy.RunTestFile(f, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rep.Results {
				if !r.Passed {
					t.Errorf("%s: %s (got %s %v, errors %v)", r.Name, r.Problem, r.Got, r.Reasons, r.Errors)
				}
			}
			if rep.Passed == 0 || rep.Failed != 0 {
				t.Fatalf("%d passed, %d failed", rep.Passed, rep.Failed)
			}
		})
	}
}
