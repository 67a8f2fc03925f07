// Package hsmtest gives tests PKCS#11 tokens in SoftHSM2 (Debian's
// softhsm2, which .ci/run installs): one token directory per test binary,
// since the PKCS#11 library reads its configuration once per process, and
// a fresh token per test. The library lists tokens when it is loaded: a
// test makes all its tokens before it opens any. Its PINs are test
// fixtures, not secrets.
package hsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
)

// Test PINs of every token made here.
const (
	PIN   = "5678"
	SOPIN = "1234"
)

var (
	setup    sync.Once
	setupErr error
	module   string
	tokens   atomic.Int64
)

// modules are where Debian puts SoftHSM2's library.
var modules = []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"}

// Token creates a SoftHSM2 token for t and returns its URI, with the PIN
// in a file. Without SoftHSM2 the test is skipped, or fails under CI=true.
func Token(t testing.TB) ca.PKCS11URI {
	t.Helper()
	setup.Do(func() {
		if !cgo {
			setupErr = fmt.Errorf("this test binary is built without cgo")
			return
		}
		setupErr = configure()
	})
	if setupErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required under CI (.ci/run installs Debian's softhsm2): %v", setupErr)
		}
		t.Skipf("SoftHSM2 is not installed (apt-get install softhsm2): %v", setupErr)
	}
	label := fmt.Sprintf("bulkhead-test-%d-%d", os.Getpid(), tokens.Add(1))
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SOPIN, "--pin", PIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, []byte(PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca.PKCS11URI{Token: label, Object: "bulkhead-", Module: module, PINSource: "file:" + pin}
}

// configure points SoftHSM2 at a token directory of this process's own.
func configure() error {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return err
	}
	for _, m := range modules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	if module == "" {
		return fmt.Errorf("no libsofthsm2.so in %v", modules)
	}
	dir, err := os.MkdirTemp("", "bulkhead-softhsm-")
	if err != nil {
		return err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return err
	}
	return os.Setenv("SOFTHSM2_CONF", conf)
}
