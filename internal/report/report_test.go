package report_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/browsertest"
	"github.com/bulkhead-dev/bulkhead/internal/report"
)

// hostile is what an agent could choose as its own name, or an operator
// mistype into a policy id: it must stay text.
const hostile = `"><img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`

func assessment() api.Assessment {
	return api.Assessment{At: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), Stage: 1,
		Surfaces: []api.SurfaceTier{
			{Surface: "identity", Tier: "enterprise", Criteria: []api.AssessCriterion{{Surface: "identity", Tier: "foundation", Name: "per-agent IDs", Met: true, Evidence: "12 decisions checked"}}},
			{Surface: "isolation", Tier: "none", Criteria: []api.AssessCriterion{{Surface: "isolation", Tier: "foundation", Name: "named callers",
				Evidence: "1 server", Blockers: []string{"gateway gw, server " + hostile + ": callers [*]"}}}},
		},
		Next: []api.AssessCriterion{{Surface: "isolation", Tier: "foundation", Name: "named callers"}},
		Lint: []string{"policy office-hours forbids by time"}}
}

func blast() api.BlastRadius {
	item := api.ReachItem{Action: "call_tool", Resource: `Tool::"docs/delete_page"`, Weight: 4.5,
		Ways: []api.ReachWay{{Via: "elevation", Manifest: "m", Trigger: "purge", Approval: "two_humans"}}, Unless: []string{"tainted"}}
	return api.BlastRadius{Version: 3, Fleet: api.ReachFleet{Score: 4.5, Analyses: 1,
		Agents: []api.ReachReport{{Agent: "spiffe://bulkhead.local/agent/" + hostile, Score: 4.5, Items: []api.ReachItem{item}}}},
		Diff: &api.ReachDiff{Before: 0, After: 4.5, Changes: []api.ReachChange{{Agent: "a", Added: []api.ReachItem{item}}}}}
}

func TestReportsEscapeWhatTheyShow(t *testing.T) {
	for name, render := range map[string]func(*bytes.Buffer) error{
		"assess": func(b *bytes.Buffer) error { return report.Assessment(b, assessment()) },
		"blast":  func(b *bytes.Buffer) error { return report.BlastRadius(b, blast()) },
	} {
		var b bytes.Buffer
		if err := render(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if strings.Contains(out, "<script") || strings.Contains(out, "<img") {
			t.Errorf("%s: markup from a name reached the page:\n%s", name, out)
		}
		if !strings.Contains(out, "&lt;script&gt;") || !strings.Contains(out, "default-src 'none'") {
			t.Errorf("%s: the name is not shown escaped, or no CSP:\n%s", name, out)
		}
	}
}

// The pages render in a real browser (headless Chromium) as tables, and a
// hostile name stays text: no element it spells exists, and no script
// ran.
func TestReportsRenderInChromium(t *testing.T) {
	browser := browsertest.Chromium(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		render func(*os.File) error
		want   []string
	}{
		{"assess.html", func(f *os.File) error { return report.Assessment(f, assessment()) },
			[]string{`<strong id="stage">1</strong>`, `<td class="tier">enterprise</td>`, `<td class="notmet">not met</td>`, "policy office-hours forbids by time"}},
		{"blast.html", func(f *os.File) error { return report.BlastRadius(f, blast()) },
			[]string{`<strong id="score">4.5</strong>`, "elevation m/purge (two_humans)", `<strong id="grew">4.5</strong>`}},
	} {
		path := filepath.Join(dir, c.name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.render(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--user-data-dir="+filepath.Join(dir, "profile-"+c.name), "--dump-dom", "file://"+path).Output()
		cancel()
		if err != nil {
			t.Fatalf("%s: chromium: %v", c.name, err)
		}
		dom := string(out)
		for _, want := range c.want {
			if !strings.Contains(dom, want) {
				t.Errorf("%s: the rendered page lacks %q:\n%s", c.name, want, dom)
			}
		}
		if strings.Contains(dom, "<script") || strings.Contains(dom, "<img") || strings.Contains(dom, "pwned</title>") {
			t.Errorf("%s: a hostile name became markup:\n%s", c.name, dom)
		}
	}
}
