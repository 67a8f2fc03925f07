package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// LoadDir reads a policy set from disk: every .cedar and .cedarschema file
// under dir (or the one file dir names), named relative to dir with forward
// slashes. Other files are ignored, so a policy repository can keep its
// tests and docs beside its policies.
func LoadDir(dir string) ([]File, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if !st.IsDir() {
		if !strings.HasSuffix(dir, PolicyExt) && !strings.HasSuffix(dir, SchemaExt) {
			return nil, fmt.Errorf("policy: %s is not a .cedar or .cedarschema file", dir)
		}
		b, err := os.ReadFile(dir)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		return []File{{Name: filepath.Base(dir), Content: string(b)}}, nil
	}
	var out []File
	total := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir // .git and the like
			}
			return nil
		}
		if !strings.HasSuffix(p, PolicyExt) && !strings.HasSuffix(p, SchemaExt) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		total += len(b)
		if total > MaxSetBytes || len(out) >= MaxFiles {
			return fmt.Errorf("%s holds more than %d files or %d bytes of policy", dir, MaxFiles, MaxSetBytes)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out = append(out, File{Name: filepath.ToSlash(rel), Content: string(b)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("policy: no .cedar files in %s", dir)
	}
	slices.SortFunc(out, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
