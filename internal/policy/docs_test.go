package policy

import (
	"fmt"
	"os"
	"regexp"
	"testing"
)

// The policies and schema shown in docs/policy.md must be valid: readers
// copy them.
func TestDocsExamplesCompile(t *testing.T) {
	b, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	var files []File
	for i, m := range regexp.MustCompile("(?s)```(cedar|cedarschema)\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		ext := PolicyExt
		if m[1] == "cedarschema" {
			ext = SchemaExt
		}
		files = append(files, File{Name: fmt.Sprintf("docs%d%s", i, ext), Content: m[2]})
	}
	if len(files) < 3 {
		t.Fatalf("found %d examples in docs/policy.md", len(files))
	}
	if _, err := Compile(files); err != nil {
		t.Fatal(err)
	}
}
