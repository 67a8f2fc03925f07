package console

import (
	"slices"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// FileDiff is how one policy file differs between two versions.
type FileDiff struct {
	Name   string
	Status string // added, removed or changed
	Lines  []DiffLine
}

// DiffLine is one line of a file's diff: Op is "+", "-" or " ".
type DiffLine struct {
	Op   string
	Text string
}

// maxDiffLines bounds the files compared line by line (the comparison is
// quadratic); a larger changed file is shown as changed, without lines.
const maxDiffLines = 2000

// diffVersions compares two versions' files.
func diffVersions(from, to []policy.File) []FileDiff {
	old := map[string]string{}
	for _, f := range from {
		old[f.Name] = f.Content
	}
	var out []FileDiff
	seen := map[string]bool{}
	for _, f := range to {
		seen[f.Name] = true
		prev, ok := old[f.Name]
		switch {
		case !ok:
			out = append(out, FileDiff{Name: f.Name, Status: "added", Lines: lineDiff("", f.Content)})
		case prev != f.Content:
			out = append(out, FileDiff{Name: f.Name, Status: "changed", Lines: lineDiff(prev, f.Content)})
		}
	}
	for _, f := range from {
		if !seen[f.Name] {
			out = append(out, FileDiff{Name: f.Name, Status: "removed", Lines: lineDiff(f.Content, "")})
		}
	}
	slices.SortFunc(out, func(a, b FileDiff) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// lineDiff is a longest-common-subsequence diff of two texts' lines.
func lineDiff(a, b string) []DiffLine {
	x, y := split(a), split(b)
	if len(x) > maxDiffLines || len(y) > maxDiffLines {
		return nil
	}
	// lcs[i][j] is the LCS length of x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []DiffLine
	i, j := 0, 0
	for i < len(x) && j < len(y) {
		switch {
		case x[i] == y[j]:
			out = append(out, DiffLine{" ", x[i]})
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, DiffLine{"-", x[i]})
			i++
		default:
			out = append(out, DiffLine{"+", y[j]})
			j++
		}
	}
	for ; i < len(x); i++ {
		out = append(out, DiffLine{"-", x[i]})
	}
	for ; j < len(y); j++ {
		out = append(out, DiffLine{"+", y[j]})
	}
	return out
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
