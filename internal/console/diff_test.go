package console

import (
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestDiffVersions(t *testing.T) {
	from := []policy.File{{Name: "a.cedar", Content: "one\ntwo\nthree\n"}, {Name: "gone.cedar", Content: "x\n"}, {Name: "same.cedar", Content: "s\n"}}
	to := []policy.File{{Name: "a.cedar", Content: "one\n2\nthree\nfour\n"}, {Name: "new.cedar", Content: "n\n"}, {Name: "same.cedar", Content: "s\n"}}
	got := diffVersions(from, to)
	want := []struct{ name, status, lines string }{
		{"a.cedar", "changed", " one|-two|+2| three|+four"},
		{"gone.cedar", "removed", "-x"},
		{"new.cedar", "added", "+n"},
	}
	if len(got) != len(want) {
		t.Fatalf("diff %+v", got)
	}
	for i, w := range want {
		var lines []string
		for _, l := range got[i].Lines {
			lines = append(lines, l.Op+l.Text)
		}
		if got[i].Name != w.name || got[i].Status != w.status || strings.Join(lines, "|") != w.lines {
			t.Errorf("%d: %s %s %s, want %+v", i, got[i].Name, got[i].Status, strings.Join(lines, "|"), w)
		}
	}
}
