// Package sandboxtest helps tests run programs in sandboxes.
package sandboxtest

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Stage copies the program at src, as name, into a new directory that a
// sandbox's unprivileged user can read and run from, and returns the
// directory and the copy. The directory is under /var/tmp, not /tmp,
// which sandboxes replace with their own; it is removed when t ends.
func Stage(t testing.TB, src, name string) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "bulkhead-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	bin = filepath.Join(dir, name)
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}
