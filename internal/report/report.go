// Package report renders assessments and blast radius as self-contained
// HTML pages: one file, no script, no outside resource, every value
// escaped (html/template) and a Content-Security-Policy that would stop a
// script even if one slipped in — the names in them (agents, policies,
// servers) come from operators and from agents' own enrollments.
package report

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
)

//go:embed *.html
var files embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"join": strings.Join,
	"mark": func(met bool) string {
		if met {
			return "met"
		}
		return "not met"
	},
	"weight": func(f float64) string { return fmt.Sprint(f) },
}).ParseFS(files, "*.html"))

// Assessment writes a as an HTML page.
func Assessment(w io.Writer, a api.Assessment) error {
	return pages.ExecuteTemplate(w, "assess.html", a)
}

// BlastRadius writes b as an HTML page.
func BlastRadius(w io.Writer, b api.BlastRadius) error {
	return pages.ExecuteTemplate(w, "blast.html", b)
}
