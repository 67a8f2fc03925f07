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
	dir = readableDir(t)
	bin = filepath.Join(dir, name)
	if err := copyFile(src, bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// StageTree makes a copy of the tree at src (hard links where the
// filesystem allows, symbolic links kept) in a new directory a sandbox's
// unprivileged user can read, and returns the copy's path. Directories
// are made world-readable; files keep their modes.
func StageTree(t testing.TB, src string) string {
	t.Helper()
	to := filepath.Join(readableDir(t), filepath.Base(src))
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(to, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case d.Type()&os.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			if os.Link(path, target) == nil {
				return nil
			}
			return copyFile(path, target)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// readableDir makes a new directory under /var/tmp (not /tmp, which
// sandboxes replace with their own) that a sandbox's unprivileged user
// can read; it is removed when t ends.
func readableDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "bulkhead-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
