package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// TestFile is a policy unit test file (YAML or JSON): a policy set, the
// world it runs in, and requests with their expected decisions. Paths are
// relative to the test file.
//
//	policies: ../policies
//	tools: ../tools.yaml
//	agents:
//	  alpha: [reader]
//	cases:
//	  - name: readers may search the docs
//	    principal: alpha
//	    action: call_tool
//	    resource: Tool::"docs/search"
//	    context: {input: {query: "setup"}}
//	    expect: allow
//	    reasons: [reader-docs]
type TestFile struct {
	Policies string `json:"policies" yaml:"policies"`
	Tools    string `json:"tools,omitempty" yaml:"tools,omitempty"`
	// TrustDomain of agents named by name; default bulkhead.local.
	TrustDomain string `json:"trust_domain,omitempty" yaml:"trust_domain,omitempty"`
	// Agents maps agent names to their roles.
	Agents map[string][]string `json:"agents,omitempty" yaml:"agents,omitempty"`
	Cases  []TestCase          `json:"cases" yaml:"cases"`
}

// TestCase is one request and what the policies must decide.
type TestCase struct {
	Name string `json:"name" yaml:"name"`
	// Principal is an agent name, an agent's SPIFFE ID, or a Cedar entity
	// reference.
	Principal string `json:"principal" yaml:"principal"`
	// Action is an action id (call_tool) or reference (NS::Action::"x").
	Action string `json:"action" yaml:"action"`
	// Resource is a Cedar entity reference: Tool::"docs/search".
	Resource string `json:"resource" yaml:"resource"`
	// Context is the request context as an AuthZEN caller sends it; risk
	// and tainted default to 0 and false, as the gateway sends them.
	Context map[string]any `json:"context,omitempty" yaml:"context,omitempty"`
	// Time is the decision time (RFC 3339); default now.
	Time string `json:"time,omitempty" yaml:"time,omitempty"`
	// Expect is allow or deny.
	Expect string `json:"expect" yaml:"expect"`
	// Reasons, if set, are exactly the determining policy ids expected.
	Reasons []string `json:"reasons,omitempty" yaml:"reasons,omitempty"`
}

// TestResult is the outcome of one case.
type TestResult struct {
	Name    string      `json:"name"`
	Passed  bool        `json:"passed"`
	Got     string      `json:"got"`
	Reasons []string    `json:"reasons,omitempty"`
	Errors  []EvalError `json:"errors,omitempty"`
	// Problem says what did not match, or why the case could not run.
	Problem string `json:"problem,omitempty"`
}

// TestReport is the outcome of a test file.
type TestReport struct {
	File    string       `json:"file"`
	Results []TestResult `json:"results"`
	Passed  int          `json:"passed"`
	Failed  int          `json:"failed"`
}

// maxTestFile bounds a test file.
const maxTestFile = 8 << 20

// ParseTestFile parses a test file; name is used in messages.
func ParseTestFile(name string, b []byte) (TestFile, error) {
	var tf TestFile
	if len(b) > maxTestFile {
		return tf, fmt.Errorf("%w: %s is over %d bytes", fault.Invalid, name, maxTestFile)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		if errors.Is(err, io.EOF) {
			return tf, fmt.Errorf("%w: %s is empty", fault.Invalid, name)
		}
		return tf, fmt.Errorf("%w: %s: %w", fault.Invalid, name, err)
	}
	if tf.Policies == "" {
		return tf, fmt.Errorf("%w: %s: policies (the policy directory) is required", fault.Invalid, name)
	}
	if len(tf.Cases) == 0 {
		return tf, fmt.Errorf("%w: %s: no cases", fault.Invalid, name)
	}
	for i, c := range tf.Cases {
		if c.Name == "" {
			tf.Cases[i].Name = fmt.Sprintf("case %d", i+1)
		}
		if c.Expect != "allow" && c.Expect != "deny" {
			return tf, fmt.Errorf("%w: %s: %s: expect must be allow or deny, not %q", fault.Invalid, name, tf.Cases[i].Name, c.Expect)
		}
		if c.Principal == "" || c.Action == "" || c.Resource == "" {
			return tf, fmt.Errorf("%w: %s: %s: principal, action and resource are required", fault.Invalid, name, tf.Cases[i].Name)
		}
	}
	for agent, roles := range tf.Agents {
		for _, r := range roles {
			if err := ValidateName("role", r); err != nil {
				return tf, fmt.Errorf("%s: agent %s: %w", name, agent, err)
			}
		}
	}
	return tf, nil
}

// RunTestFile loads a test file with the policies and catalog it names and
// runs its cases; now is the default decision time. An error means the
// file or its policies could not be loaded (an invalid policy set returns
// Errors); failing cases are in the report.
func RunTestFile(path string, now time.Time) (TestReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return TestReport{}, fmt.Errorf("policy: %w", err)
	}
	tf, err := ParseTestFile(path, b)
	if err != nil {
		return TestReport{}, err
	}
	base := filepath.Dir(path)
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	files, err := LoadDir(rel(tf.Policies))
	if err != nil {
		return TestReport{}, err
	}
	set, err := Compile(files)
	if err != nil {
		return TestReport{}, err
	}
	var cat Catalog
	if tf.Tools != "" {
		cb, err := os.ReadFile(rel(tf.Tools))
		if err != nil {
			return TestReport{}, fmt.Errorf("policy: %w", err)
		}
		if cat, err = ParseCatalog(tf.Tools, cb); err != nil {
			return TestReport{}, err
		}
	}
	report := tf.Run(set, cat, now)
	report.File = path
	return report, nil
}

// Run runs the cases against a compiled set and catalog.
func (tf TestFile) Run(set *Set, cat Catalog, now time.Time) TestReport {
	td := spiffeid.RequireTrustDomainFromString("bulkhead.local")
	if tf.TrustDomain != "" {
		if t, err := spiffeid.TrustDomainFromString(tf.TrustDomain); err == nil {
			td = t
		}
	}
	var agents []AgentRoles
	for _, name := range slices.Sorted(maps.Keys(tf.Agents)) {
		if id, err := spiffeid.FromSegments(td, "agent", name); err == nil {
			agents = append(agents, AgentRoles{Name: name, SPIFFEID: id.String(), Roles: tf.Agents[name]})
		}
	}
	w := newWorld(td, agents, cat)
	cs := newCompiledSet(set)
	var rep TestReport
	for _, c := range tf.Cases {
		r := runCase(td, w, cs, c, now)
		if r.Passed {
			rep.Passed++
		} else {
			rep.Failed++
		}
		rep.Results = append(rep.Results, r)
	}
	return rep
}

func runCase(td spiffeid.TrustDomain, w *world, cs *compiledSet, c TestCase, now time.Time) TestResult {
	res := TestResult{Name: c.Name}
	pr, at, err := c.prepare(td, now)
	if err != nil {
		res.Problem = err.Error()
		return res
	}
	req := pr.build(at)
	v := &view{w: w, actions: cs.actions}
	v.addAgent(req.Principal)
	for _, e := range pr.extra {
		v.extra = append(v.extra, &node{entity: e})
	}
	allowed, reasons, errs := conclude(cs.evaluate(v, req))
	res.Got, res.Reasons, res.Errors = word(allowed), reasons, errs
	var problems []string
	if res.Got != c.Expect {
		problems = append(problems, fmt.Sprintf("got %s, want %s", res.Got, c.Expect))
	}
	if c.Reasons != nil {
		want := slices.Sorted(slices.Values(c.Reasons))
		if !slices.Equal(want, reasons) {
			problems = append(problems, fmt.Sprintf("determining policies %v, want %v", reasons, want))
		}
	}
	res.Problem = strings.Join(problems, "; ")
	res.Passed = len(problems) == 0
	return res
}

func (c TestCase) prepare(td spiffeid.TrustDomain, now time.Time) (*prepared, time.Time, error) {
	at := now
	if c.Time != "" {
		t, err := time.Parse(time.RFC3339, c.Time)
		if err != nil {
			return nil, at, fmt.Errorf("%w: time %q is not RFC 3339", fault.Invalid, c.Time)
		}
		at = t
	}
	principal, err := testPrincipal(td, c.Principal)
	if err != nil {
		return nil, at, err
	}
	resource, err := parseEntityUID(c.Resource)
	if err != nil {
		return nil, at, err
	}
	action, err := authzenAction(c.Action)
	if err != nil {
		return nil, at, err
	}
	raw, err := json.Marshal(c.Context)
	if err != nil {
		return nil, at, fmt.Errorf("%w: context: %w", fault.Invalid, err)
	}
	ctx, _, err := authzenContext(raw)
	if err != nil {
		return nil, at, err
	}
	if _, ok := ctx[ctxRisk]; !ok {
		ctx[ctxRisk] = cedar.Long(0)
	}
	if _, ok := ctx[ctxTainted]; !ok {
		ctx[ctxTainted] = cedar.False
	}
	return &prepared{principal: principal, action: action, resource: resource, ctx: ctx}, at, nil
}

// testPrincipal reads an agent name, an agent SPIFFE ID or an entity
// reference.
func testPrincipal(td spiffeid.TrustDomain, s string) (cedar.EntityUID, error) {
	switch {
	case strings.HasPrefix(s, "spiffe://"):
		if _, ok := parseAgentID(s); !ok {
			return cedar.EntityUID{}, fmt.Errorf("%w: %q is not an agent's SPIFFE ID", fault.Invalid, s)
		}
		return cedar.NewEntityUID(TypeAgent, cedar.String(s)), nil
	case strings.Contains(s, "::"):
		return parseEntityUID(s)
	}
	id, err := spiffeid.FromPath(td, "/agent/"+s)
	if err != nil {
		return cedar.EntityUID{}, fmt.Errorf("%w: agent name %q: %w", fault.Invalid, s, err)
	}
	if _, ok := parseAgentID(id.String()); !ok {
		return cedar.EntityUID{}, fmt.Errorf("%w: %q is not an agent name (NAME, or NAME/sub/ID for a sub-agent)", fault.Invalid, s)
	}
	return Agent(id), nil
}
