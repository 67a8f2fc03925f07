// Package browsertest runs Debian's headless chromium for tests: finding
// it (skipping without it, failing under CI=true, where .ci/run installs
// it) and driving it through the DevTools protocol (chromedp), with a
// WebAuthn virtual authenticator for passkey ceremonies.
package browsertest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// Chromium returns the path of chromium.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// Browser is a headless chromium tab.
type Browser struct {
	Ctx context.Context
	// Authenticator is the tab's virtual authenticator.
	Authenticator webauthn.AuthenticatorID
}

// New starts a headless chromium for t that trusts the server certificate
// cert as if a CA it knows had issued it (by its public key), so the page
// is a secure context where WebAuthn works, and adds a virtual platform
// authenticator that holds discoverable credentials and verifies its user.
func New(t testing.TB, cert *x509.Certificate) *Browser {
	t.Helper()
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium(t)), chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("chromium: enable WebAuthn: %v", err)
	}
	res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true}})
	if err != nil {
		t.Fatalf("chromium: add a virtual authenticator: %v", err)
	}
	return &Browser{Ctx: ctx, Authenticator: res.AuthenticatorID}
}

// SetUserVerified makes the authenticator's user verification succeed or
// fail from now on.
func (b *Browser) SetUserVerified(t testing.TB, ok bool) {
	t.Helper()
	if _, err := chromedp.Call(b.Ctx, webauthn.SetUserVerified, webauthn.SetUserVerifiedParams{AuthenticatorID: b.Authenticator, IsUserVerified: ok}); err != nil {
		t.Fatalf("chromium: set user verification: %v", err)
	}
}

// Do runs steps, failing t on error.
func (b *Browser) Do(t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.Ctx, steps...); err != nil {
		t.Fatalf("chromium: %v", err)
	}
}

// Eval evaluates a JavaScript expression (awaiting a promise) and returns
// its string value.
func (b *Browser) Eval(t testing.TB, expr string) string {
	t.Helper()
	v, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("chromium: evaluate %s: %v", expr, err)
	}
	return v
}

// WaitFor waits until the JavaScript condition holds, across the page
// navigating (which ends a wait in the old page: it starts again in the
// new one).
func (b *Browser) WaitFor(t testing.TB, cond string) {
	t.Helper()
	var err error
	for range 10 {
		if _, err = chromedp.Run(b.Ctx, chromedp.Poll[bool](cond)); err == nil {
			return
		}
		if msg := err.Error(); !strings.Contains(msg, "navigated") && !strings.Contains(msg, "context was destroyed") && !strings.Contains(msg, "Cannot find context") {
			break
		}
	}
	t.Fatalf("chromium: waiting for %s: %v (page says %q)", cond, err, b.Eval(t, `document.body ? document.body.innerText : ""`))
}

// Screenshot writes a PNG of the page to path (quality 100 is PNG).
func (b *Browser) Screenshot(t testing.TB, path string) {
	t.Helper()
	// A page just navigated to may not be laid out yet (a busy machine),
	// and chromium refuses to capture a page of width 0.
	b.WaitFor(t, `document.readyState == "complete" && document.documentElement.getBoundingClientRect().width > 0`)
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("chromium: screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
