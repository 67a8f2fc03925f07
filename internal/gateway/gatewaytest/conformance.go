package gatewaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The official MCP conformance suite (@modelcontextprotocol/conformance,
// pinned in js/package.json) runs its server scenarios against a URL; the
// helpers here start js/conformance-server.mjs, run the suite's CLI and read
// back every check it recorded.

// conformanceCLI is the suite's entry point, relative to the harness.
const conformanceCLI = "node_modules/@modelcontextprotocol/conformance/dist/index.js"

// ConformanceHarness is NodeHarness plus the conformance package: it skips
// the test without it, and fails it under CI=true.
func ConformanceHarness(t testing.TB) (dir string) {
	t.Helper()
	dir = NodeHarness(t)
	if _, err := os.Stat(filepath.Join(dir, conformanceCLI)); err != nil {
		msg := "MCP conformance suite not installed (run: npm ci --prefix internal/gateway/gatewaytest/js)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; required under CI=true")
		}
		t.Skip(msg)
	}
	return dir
}

// ConformanceServer is a running conformance-server.mjs.
type ConformanceServer struct {
	// URL is its MCP endpoint, http://127.0.0.1:PORT/mcp.
	URL string
	// Tools are the names of every tool it serves, in either era.
	Tools []string
}

// StartConformanceServer starts conformance-server.mjs on a free loopback
// port, with further flags args (e.g. "--no-resume"). It is killed at
// t.Cleanup, its stderr logged if the test failed.
func StartConformanceServer(t testing.TB, args ...string) *ConformanceServer {
	t.Helper()
	srv := &ConformanceServer{}
	var mu sync.Mutex
	url, _ := startNode(t, ConformanceHarness(t), append([]string{"conformance-server.mjs"}, args...), func(line []byte) {
		var first struct {
			Tools []string `json:"tools"`
		}
		if json.Unmarshal(line, &first) == nil && first.Tools != nil {
			mu.Lock()
			srv.Tools = first.Tools
			mu.Unlock()
		}
	})
	mu.Lock()
	defer mu.Unlock()
	srv.URL = url
	return srv
}

// ConformanceCheck is one check the suite recorded (checks.json).
type ConformanceCheck struct {
	// Scenario is the scenario that ran it, e.g. "tools-call-simple-text".
	Scenario string `json:"-"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	// Status is SUCCESS, FAILURE, WARNING, SKIPPED or INFO.
	Status       string `json:"status"`
	ErrorMessage string `json:"errorMessage"`
	// Details is what the check saw, as the suite recorded it.
	Details json.RawMessage `json:"details"`
}

// Key names the check within a run: its scenario, its id, and, for an id
// a scenario records more than once (one per probe, in a fixed order), the
// occurrence.
func (c ConformanceCheck) Key(occurrence int) string {
	k := c.Scenario + " " + c.ID
	if occurrence > 1 {
		k += fmt.Sprintf(" #%d", occurrence)
	}
	return k
}

// ConformanceRun is what one run of the suite recorded.
type ConformanceRun struct {
	// Checks are in scenario order, then in the order each scenario
	// recorded them.
	Checks []ConformanceCheck
	// Scenarios are the scenarios that ran, in order.
	Scenarios []string
	Output    string // the CLI's stdout and stderr, for failure messages
	Elapsed   time.Duration
}

// Keyed returns the checks by Key.
func (r *ConformanceRun) Keyed() map[string]ConformanceCheck {
	out := map[string]ConformanceCheck{}
	seen := map[string]int{}
	for _, c := range r.Checks {
		base := c.Scenario + " " + c.ID
		seen[base]++
		out[c.Key(seen[base])] = c
	}
	return out
}

// ScenarioPassed reports whether every check of scenario that decided
// something succeeded (no FAILURE or WARNING), as the CLI's summary counts
// it plus warnings.
func (r *ConformanceRun) ScenarioPassed(scenario string) bool {
	for _, c := range r.Checks {
		if c.Scenario == scenario && (c.Status == "FAILURE" || c.Status == "WARNING") {
			return false
		}
	}
	return true
}

// resultDir is how the CLI names a scenario's results: server-SCENARIO-
// followed by the ISO time with ':' and '.' made '-'.
var resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$`)

// RunConformance runs the suite's server scenarios against url with the
// CLI flags args (e.g. "--suite", "all", "--spec-version", "2026-07-28")
// and returns every check recorded. The CLI runs in a fresh directory, its
// results under it; each scenario is bounded by the suite's own --timeout,
// the whole run by timeout. A run that records no check fails the test.
func RunConformance(t testing.TB, url string, timeout time.Duration, args ...string) *ConformanceRun {
	t.Helper()
	dir := ConformanceHarness(t)
	work := t.TempDir()
	results := filepath.Join(work, "results")
	argv := append([]string{"--import", filepath.Join(dir, "node20-register.mjs"), filepath.Join(dir, conformanceCLI),
		"server", "--url", url, "--output-dir", results}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", argv...)
	cmd.Dir = work
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	run := &ConformanceRun{Output: out.String(), Elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("conformance %s did not finish within %v; output:\n%s", strings.Join(args, " "), timeout, run.Output)
	}
	// Exit status 1 is "some check failed", which the caller judges.
	if exit, ok := err.(*exec.ExitError); err != nil && (!ok || exit.ExitCode() != 1) {
		t.Fatalf("conformance %s: %v; output:\n%s", strings.Join(args, " "), err, run.Output)
	}
	entries, err := os.ReadDir(results)
	if err != nil {
		t.Fatalf("conformance %s wrote no results: %v; output:\n%s", strings.Join(args, " "), err, run.Output)
	}
	// Directory names sort by scenario, not by when it ran; the time in
	// the name gives the order.
	type dirScenario struct{ name, scenario, stamp string }
	var dirs []dirScenario
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			t.Fatalf("conformance: unexpected result %q", e.Name())
		}
		dirs = append(dirs, dirScenario{e.Name(), m[1], strings.TrimPrefix(e.Name(), "server-"+m[1]+"-")})
	}
	sort.SliceStable(dirs, func(i, j int) bool { return dirs[i].stamp < dirs[j].stamp })
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(results, d.name, "checks.json"))
		if err != nil {
			t.Fatalf("conformance %s: %v", d.scenario, err)
		}
		var checks []ConformanceCheck
		if err := json.Unmarshal(b, &checks); err != nil {
			t.Fatalf("conformance %s: checks.json: %v", d.scenario, err)
		}
		run.Scenarios = append(run.Scenarios, d.scenario)
		for _, c := range checks {
			c.Scenario = d.scenario
			run.Checks = append(run.Checks, c)
		}
	}
	if len(run.Checks) == 0 {
		t.Fatalf("conformance %s recorded no check; output:\n%s", strings.Join(args, " "), run.Output)
	}
	return run
}
