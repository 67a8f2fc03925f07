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

// StartCertified is Start with a TPM that a maker vouches for: swtpm_setup
// provisions its endorsement key and a certificate for it, issued by a
// local CA of the test's own (swtpm_localca). It returns the TPM and the
// PEM of that CA's certificates, the EK CA to trust.
func StartCertified(t testing.TB) (TPM, string) {
	t.Helper()
	bin := need(t, "swtpm", "swtpm")
	need(t, "swtpm_setup", "swtpm-tools")
	dir := tempDir(t)
	ca := filepath.Join(dir, "ca")
	if err := os.Mkdir(ca, 0o700); err != nil {
		t.Fatal(err)
	}
	localca := filepath.Join(dir, "localca.conf")
	write(t, localca, "statedir = "+ca+"\nsigningkey = "+ca+"/signkey.pem\nissuercert = "+ca+"/issuercert.pem\ncertserial = "+ca+"/certserial\n")
	setup := filepath.Join(dir, "setup.conf")
	write(t, setup, "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = "+localca+"\nactive_pcr_banks = sha256\n")
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--create-ek-cert", "--config", setup).CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v: %s", err, out)
	}
	var roots []byte
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca, f))
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, b...)
	}
	pemPath := filepath.Join(dir, "ek-ca.pem")
	write(t, pemPath, string(roots))
	return start(t, bin, state), pemPath
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tempDir is a directory short enough for a Unix socket path, which
// t.TempDir can exceed.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bulkhead-swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Start runs a fresh swtpm for t, stopped when t ends. The socket is bound
// and listening before swtpm starts (it is handed over as a descriptor), so
// a client may connect at once: nothing waits for swtpm to be ready.
func Start(t testing.TB) TPM {
	t.Helper()
	return start(t, need(t, "swtpm", "swtpm"), tempDir(t))
}

// need finds program, skipping the test without it (failing under CI=true).
func need(t testing.TB, program, pkg string) string {
	t.Helper()
	bin, err := exec.LookPath(program)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI (.ci/run installs Debian's %s): %v", program, pkg, err)
		}
		t.Skipf("%s is not installed (apt-get install %s): %v", program, pkg, err)
	}
	return bin
}

// start serves the TPM whose state is in dir with swtpm at bin.
func start(t testing.TB, bin, dir string) TPM {
	t.Helper()
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
