// Package tpmtest gives tests a TPM 2.0 of their own: swtpm (Debian's
// swtpm, which .ci/run installs) serving a fresh, manufactured TPM on a
// Unix socket in the test's temporary directory. Without swtpm the test is
// skipped, or fails under CI=true.
package tpmtest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TPM is a running swtpm.
type TPM struct {
	// Spec opens it with tpmkey.Open.
	Spec string
	// Dir holds its state.
	Dir string
}

// Start runs a fresh swtpm for t, stopped when t ends. The socket is bound
// and listening before swtpm starts (it is handed over as a descriptor), so
// a client may connect at once: nothing waits for swtpm to be ready.
func Start(t testing.TB) TPM {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("swtpm is required under CI (.ci/run installs Debian's swtpm): %v", err)
		}
		t.Skipf("swtpm is not installed (apt-get install swtpm): %v", err)
	}
	// Unix socket paths are short; t.TempDir can be too long.
	dir, err := os.MkdirTemp("", "bulkhead-swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "tpm.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close() // the duplicate in f keeps the socket listening
	var out bytes.Buffer
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", "type=unixio,fd=3", "--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--flags", "not-need-init,startup-clear", "--log", "level=0")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	_ = f.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && out.Len() > 0 {
			t.Logf("swtpm: %s", out.String())
		}
	})
	return TPM{Spec: "unix:" + sock, Dir: dir}
}
