package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
	"github.com/bulkhead-dev/bulkhead/internal/tpmkey"
)

// Enroll trades a one-time join token for an SVID and writes svid.pem,
// svid_key.pem (0600) and svid_bundle.pem to outDir. The private key is
// generated here and never leaves this process.
//
// The token pins the CA root's fingerprint: Enroll fetches the public trust
// bundle, accepts it only if it holds that root, and then talks to the
// server only over TLS verified against it and the server's SPIFFE ID.
//
// serverURL may list replicas separated by commas: they are tried in order
// until one answers. An answer is final, a refusal included: replicas
// share one database, so another would refuse too, and one that does not
// hold the pinned CA is a misconfiguration to report, not to route around.
// Only a failure to get an answer (a transport error) moves on.
func Enroll(ctx context.Context, serverURL, token, outDir string) (*x509svid.SVID, error) {
	key, csrPEM, err := newKeyAndCSR(spiffeid.ID{})
	if err != nil {
		return nil, err
	}
	return enroll(ctx, serverURL, token, outDir, func(post poster) (api.SVID, crypto.Signer, error) {
		var resp api.SVID
		err := post("/v1/enroll", api.EnrollRequest{Token: token, CSR: string(csrPEM)}, &resp)
		return resp, key, err
	})
}

// EnrollTPM is Enroll with the key created inside the TPM at tpmSpec (a
// device path, or unix:PATH for a TPM simulator's socket) and proven to be
// there: attested enrollment. The key never leaves the TPM; outDir keeps
// the TPM's wrapped blob (svid_key.tpm), which only that TPM can load. The
// SVID returned has no PrivateKey: load outDir to use it.
func EnrollTPM(ctx context.Context, serverURL, token, outDir, tpmSpec string) (*x509svid.SVID, error) {
	tp, err := tpmkey.Open(tpmSpec)
	if err != nil {
		return nil, err
	}
	// A TPM may serve one client at a time: it is closed here, and the
	// key is loaded again from outDir (LoadSource) to be used.
	defer tp.Close()
	var key *tpmkey.Key
	svid, err := enroll(ctx, serverURL, token, outDir, func(post poster) (api.SVID, crypto.Signer, error) {
		resp, k, err := proveTPM(post, tp, token, spiffeid.ID{}, "/v1/enroll/tpm", nil)
		key = k
		return resp, k, err
	})
	if key != nil {
		_ = key.Close()
	}
	if svid != nil {
		svid.PrivateKey = nil
	}
	return svid, err
}

// poster sends one request to the control plane.
type poster func(path string, in, out any) error

// proveTPM runs attested enrollment (or renewal, under base) with tp.
//
// A TPM without a resource manager (swtpm) holds three objects: the key
// being replaced, if any, is unloaded once the challenge is in, and loads
// itself again if it must sign after all.
func proveTPM(post poster, tp *tpmkey.TPM, token string, id spiffeid.ID, base string, replaced *tpmkey.Key) (api.SVID, *tpmkey.Key, error) {
	p, begin, err := tp.Begin()
	if err != nil {
		return api.SVID{}, nil, err
	}
	// The attestation key serves this enrollment only.
	defer p.Close()
	begin.Token = token
	var ch api.TPMChallenge
	if err := post(base+"/challenge", begin, &ch); err != nil {
		return api.SVID{}, nil, err
	}
	if replaced != nil {
		_ = replaced.Unload()
	}
	fin, key, err := p.Answer(ch)
	if err != nil {
		return api.SVID{}, nil, err
	}
	csrPEM, err := csrFor(id, key)
	if err != nil {
		_ = key.Close()
		return api.SVID{}, nil, err
	}
	fin.Token, fin.CSR = token, string(csrPEM)
	var resp api.SVID
	if err := post(base, fin, &resp); err != nil {
		_ = key.Close()
		return api.SVID{}, nil, err
	}
	return resp, key, nil
}

// enroll runs exchange with the first replica that answers.
func enroll(ctx context.Context, serverURL, token, outDir string, exchange func(poster) (api.SVID, crypto.Signer, error)) (*x509svid.SVID, error) {
	bases, err := parseServerURLs(serverURL)
	if err != nil {
		return nil, err
	}
	pt, err := identity.ParseJoinToken(token)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	var errs []error
	for _, base := range bases {
		svid, err := enrollAt(ctx, base, pt.RootSHA256, outDir, exchange)
		var ue *url.Error
		if err == nil || len(bases) == 1 || ctx.Err() != nil || !errors.As(err, &ue) {
			return svid, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("client: enroll: no control plane replica answered: %w", errors.Join(errs...))
}

// enrollAt enrolls with the replica at base. An error holding a *url.Error
// is a request that got no answer.
func enrollAt(ctx context.Context, base *url.URL, pin [32]byte, outDir string, exchange func(poster) (api.SVID, crypto.Signer, error)) (*x509svid.SVID, error) {
	root, err := fetchPinnedRoot(ctx, base, pin)
	if err != nil {
		return nil, err
	}
	td, err := trustDomainOf(root)
	if err != nil {
		return nil, err
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{root})
	tlsCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(ServerID(td)))
	tlsCfg.MinVersion = tls.VersionTLS13
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, key, err := exchange(func(path string, in, out any) error {
		return do(ctx, hc, base, http.MethodPost, path, in, out)
	})
	if err != nil {
		return nil, err
	}
	return acceptSVID(resp, key, bundle, spiffeid.ID{}, outDir)
}

// fetchPinnedRoot reads the public bundle without authenticating the server
// (nothing secret is sent) and returns the root whose SHA-256 is pin.
func fetchPinnedRoot(ctx context.Context, base *url.URL, pin [32]byte) (*x509.Certificate, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		// The bundle is checked against the pin below instead.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, //nolint:gosec
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+"/v1/bundle", nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: fetch trust bundle: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: fetch trust bundle: status %d: %v", resp.StatusCode, err)
	}
	// The trust domain name is not in the bundle document; any name parses
	// it, and the real one is read from the pinned root below.
	parsed, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("bundle.invalid"), b)
	if err != nil {
		return nil, fmt.Errorf("client: parse trust bundle: %w", err)
	}
	for _, c := range parsed.X509Authorities() {
		if sha256.Sum256(c.Raw) == pin {
			return c, nil
		}
	}
	return nil, fmt.Errorf("client: the server at %s does not hold the CA pinned by the join token; refusing to enroll", base.Host)
}

func trustDomainOf(root *x509.Certificate) (spiffeid.TrustDomain, error) {
	if len(root.URIs) != 1 {
		return spiffeid.TrustDomain{}, fmt.Errorf("client: CA root has no trust domain URI")
	}
	return spiffeid.TrustDomainFromURI(root.URIs[0])
}

func newKeyAndCSR(id spiffeid.ID) (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("client: generate key: %w", err)
	}
	csr, err := csrFor(id, key)
	return key, csr, err
}

// csrFor is a CSR signed by key, naming id if set.
func csrFor(id spiffeid.ID, key crypto.Signer) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	if !id.IsZero() {
		tmpl.URIs = append(tmpl.URIs, id.URL())
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("client: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// acceptSVID checks an issued SVID before anything is written: it must
// verify against the bundle we already trust, carry our key, and (if want is
// set) our SPIFFE ID.
func acceptSVID(resp api.SVID, key crypto.Signer, trusted *x509bundle.Bundle, want spiffeid.ID, outDir string) (*x509svid.SVID, error) {
	chain, err := ca.ParseCerts([]byte(resp.CertChain))
	if err != nil {
		return nil, fmt.Errorf("client: issued SVID: %w", err)
	}
	id, _, err := x509svid.Verify(chain, trusted)
	if err != nil {
		return nil, fmt.Errorf("client: issued SVID does not verify: %w", err)
	}
	if !want.IsZero() && id != want {
		return nil, fmt.Errorf("client: issued SVID is for %s, want %s", id, want)
	}
	if pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("client: issued SVID is not for our key")
	}
	// The bundle written is the one we verified against, not whatever the
	// response carried.
	if outDir != "" {
		if err := svidfile.Write(outDir, ca.EncodeCerts(chain...), key, ca.EncodeCerts(trusted.X509Authorities()...)); err != nil {
			return nil, err
		}
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

// Renew obtains a new SVID for a new key over mTLS with the current one and
// writes it to dir (the directory the current one was loaded from).
func (c *Client) Renew(ctx context.Context, dir string) (*x509svid.SVID, error) {
	id := c.src.ID()
	cur, _ := c.src.GetX509SVID()
	if k, ok := cur.PrivateKey.(*tpmkey.Key); ok {
		// A key in a TPM is renewed with a new proof from the same TPM.
		return c.renew(ctx, dir, func() (api.SVID, crypto.Signer, error) {
			resp, key, err := proveTPM(func(path string, in, out any) error {
				return c.do(ctx, http.MethodPost, path, in, out)
			}, k.TPM(), "", id, "/v1/svid/renew/tpm", k)
			if err != nil {
				return resp, nil, err
			}
			// The old key's object slot is the TPM's to reuse.
			_ = k.Replace(key)
			return resp, key, nil
		})
	}
	return c.renew(ctx, dir, func() (api.SVID, crypto.Signer, error) {
		key, csrPEM, err := newKeyAndCSR(id)
		if err != nil {
			return api.SVID{}, nil, err
		}
		var resp api.SVID
		err = c.do(ctx, http.MethodPost, "/v1/svid/renew", api.RenewRequest{CSR: string(csrPEM)}, &resp)
		return resp, key, err
	})
}

func (c *Client) renew(ctx context.Context, dir string, exchange func() (api.SVID, crypto.Signer, error)) (*x509svid.SVID, error) {
	id := c.src.ID()
	resp, key, err := exchange()
	if err != nil {
		return nil, err
	}
	bundle, _ := c.src.GetX509BundleForTrustDomain(id.TrustDomain())
	svid, err := acceptSVID(resp, key, bundle, id, dir)
	if err != nil {
		return nil, err
	}
	c.src.set(svid, bundle)
	// Switch to the new SVID's connection pool now, closing the previous
	// one's idle connections.
	c.http.CloseIdleConnections()
	return svid, nil
}

// SetAgentTPM sets the TPM agent name's key must live in: "sha256:HEX" of
// its endorsement key, "ek-ca", or "" for none.
func (c *Client) SetAgentTPM(ctx context.Context, name, ek string) (api.Agent, error) {
	var a api.Agent
	return a, c.do(ctx, http.MethodPut, "/v1/agents/"+url.PathEscape(name)+"/tpm", api.SetTPMRequest{EK: ek}, &a)
}

// Bundle fetches the trust bundle document (SPIFFE format).
func (c *Client) Bundle(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, c.do(ctx, http.MethodGet, "/v1/bundle", nil, &raw)
}

// CRL fetches the DER certificate revocation list.
func (c *Client) CRL(ctx context.Context) (*x509.RevocationList, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v1/crl", nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: fetch CRL: %w", err)
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: fetch CRL: status %d: %v", resp.StatusCode, err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("client: parse CRL: %w", err)
	}
	// The CRL is signed by the intermediate, which the server presents in
	// our own SVID's chain.
	svid, _ := c.src.GetX509SVID()
	if len(svid.Certificates) < 2 || crl.CheckSignatureFrom(svid.Certificates[1]) != nil {
		return nil, fmt.Errorf("client: CRL signature does not verify against the signing CA")
	}
	return crl, nil
}

// Rotator keeps an SVID fresh: it renews at half of the certificate's life,
// retrying with backoff on failure, and swaps the new SVID into its Source so
// that TLS configurations built on the Source pick it up.
type Rotator struct {
	client *Client
	dir    string
	logger *slog.Logger
	// OnRotate, if set, is called after each successful rotation.
	OnRotate func(*x509svid.SVID)
	// Clock decides when to renew; nil means the wall clock. Set it before
	// Run.
	Clock Clock
}

// Clock is the time source of a Rotator.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// NewRotator returns a Rotator for the credential directory dir.
func NewRotator(serverURL, dir string, logger *slog.Logger) (*Rotator, error) {
	c, err := NewFromDir(serverURL, dir)
	if err != nil {
		return nil, err
	}
	return &Rotator{client: c, dir: dir, logger: logger}, nil
}

// Source is the rotating credential source.
func (r *Rotator) Source() *Source { return r.client.src }

// Client is the API client that uses the rotating credential.
func (r *Rotator) Client() *Client { return r.client }

// Run rotates until ctx ends, when it returns nil. Transient failures
// (network, server unavailable) are retried with backoff until the SVID
// expires; a refusal (revoked, disabled) is final and returned, because no
// retry can succeed.
// minRenewGap is the least time between two renewals by a Rotator.
const minRenewGap = 10 * time.Second

func (r *Rotator) Run(ctx context.Context) error {
	clk := r.Clock
	if clk == nil {
		clk = wallClock{}
	}
	backoff := time.Second
	renewed := false
	for {
		leaf := r.client.src.Leaf()
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		wait := max(half.Sub(clk.Now()), 0)
		if renewed {
			// A new SVID whose half-life is already past (the CA's clock
			// behind this host's, or one issued within the second of the
			// last: certificate times have one-second precision) must not
			// make the rotator renew in a loop.
			wait = max(wait, minRenewGap)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-clk.After(wait):
		}
		svid, err := r.client.Renew(ctx, r.dir)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var apiErr *Error
			if errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 && apiErr.Status != http.StatusTooManyRequests {
				return fmt.Errorf("client: SVID renewal refused: %w", err)
			}
			if !clk.Now().Before(leaf.NotAfter) {
				return fmt.Errorf("client: SVID expired at %s before it could be renewed (re-enroll with a new join token): %w", leaf.NotAfter.Format(time.RFC3339), err)
			}
			r.logger.Error("SVID renewal failed; retrying", "err", err, "retry_in", backoff, "expires", leaf.NotAfter)
			select {
			case <-ctx.Done():
				return nil
			case <-clk.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff, renewed = time.Second, true
		r.logger.Info("SVID rotated", "spiffe_id", svid.ID, "expires", svid.Certificates[0].NotAfter)
		if r.OnRotate != nil {
			r.OnRotate(svid)
		}
	}
}
