// Package ca is Bulkhead's certificate authority: a root and an intermediate
// signing CA per trust domain, issuing X.509-SVIDs that follow the SPIFFE
// X509-SVID standard, a signed CRL, and the SPIFFE trust bundle.
//
// The signing key is a crypto.Signer obtained from a KeyStore, so a hardware
// or KMS key can replace the file key without changing this package.
package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// Lifetimes of the CA certificates. The intermediate is replaced at start-up
// once a third of its life remains, so certificates it issued never outlive
// it.
const (
	RootTTL         = 10 * 365 * 24 * time.Hour
	IntermediateTTL = 365 * 24 * time.Hour
	// Backdate absorbs small clock differences between the CA and verifiers.
	Backdate = time.Minute
	// MaxSVIDTTL caps any SVID's lifetime.
	MaxSVIDTTL = 30 * 24 * time.Hour
	// BundleRefreshHint tells bundle consumers how often to poll.
	BundleRefreshHint = 5 * time.Minute
	// CRLValidity is the NextUpdate distance of a generated CRL.
	CRLValidity = time.Hour
)

// Authority is one trust domain's CA.
type Authority struct {
	td           spiffeid.TrustDomain
	root         *x509.Certificate
	intermediate *x509.Certificate
	signer       crypto.Signer
	clock        clock.Clock
}

// Config says where an Authority keeps its material.
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	// Dir holds the CA certificates (root.pem, intermediate.pem). Required.
	Dir string
	// Keys holds the private keys. Defaults to a FileKeyStore in Dir.
	Keys  KeyStore
	Clock clock.Clock // required
}

// LoadOrCreate loads the CA in cfg.Dir, creating a root and intermediate on
// first use. created reports whether a new root was made.
func LoadOrCreate(cfg Config) (a *Authority, created bool, err error) {
	if cfg.TrustDomain.IsZero() || cfg.Dir == "" || cfg.Clock == nil {
		return nil, false, errors.New("ca: trust domain, directory and clock are required")
	}
	keys := cfg.Keys
	if keys == nil {
		keys = FileKeyStore{Dir: cfg.Dir}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("ca: create directory: %w", err)
	}
	a = &Authority{td: cfg.TrustDomain, clock: cfg.Clock}
	rootPath := filepath.Join(cfg.Dir, "root.pem")

	root, err := readCert(rootPath)
	var rootKey crypto.Signer
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if rootKey, err = keys.Generate("root"); err != nil {
			return nil, false, err
		}
		if root, err = a.createCA(rootKey, nil, nil, "Bulkhead Root CA", RootTTL, 1); err != nil {
			return nil, false, err
		}
		if err := writeCert(rootPath, root); err != nil {
			return nil, false, err
		}
		created = true
	case err != nil:
		return nil, false, err
	default:
		if rootKey, err = signerOf(keys, "root", root); err != nil {
			return nil, false, err
		}
	}
	if err := a.checkCA(root); err != nil {
		return nil, false, fmt.Errorf("ca: root %s: %w", rootPath, err)
	}
	a.root = root

	interPath := filepath.Join(cfg.Dir, "intermediate.pem")
	inter, err := readCert(interPath)
	if err == nil && !created {
		a.signer, err = signerOf(keys, "intermediate", inter)
		if errors.Is(err, errKeyMismatch) {
			// Not this intermediate's key (a rotation cut short): make
			// a new intermediate, as for a missing key.
			err = nil
			inter = nil
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if created || inter == nil || a.needsRotation(inter) || inter.CheckSignatureFrom(root) != nil {
		if a.signer, err = keys.Generate("intermediate"); err != nil {
			return nil, false, err
		}
		if inter, err = a.createCA(a.signer, root, rootKey, "Bulkhead Signing CA", IntermediateTTL, 0); err != nil {
			return nil, false, err
		}
		if err := writeCert(interPath, inter); err != nil {
			return nil, false, err
		}
	}
	if err := a.checkCA(inter); err != nil {
		return nil, false, fmt.Errorf("ca: intermediate %s: %w", interPath, err)
	}
	a.intermediate = inter
	return a, created, nil
}

func (a *Authority) needsRotation(c *x509.Certificate) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotAfter.Sub(a.clock.Now()) < life/3
}

// checkCA ensures a loaded CA certificate belongs to this trust domain and is
// in force: a data directory from another trust domain must not be reused
// silently.
func (a *Authority) checkCA(c *x509.Certificate) error {
	if !c.IsCA {
		return errors.New("not a CA certificate")
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != a.td.IDString() {
		return fmt.Errorf("belongs to another trust domain (URI SAN %v, want %s)", c.URIs, a.td.IDString())
	}
	if now := a.clock.Now(); now.After(c.NotAfter) {
		return fmt.Errorf("expired at %s", c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

func (a *Authority) createCA(key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer, cn string, ttl time.Duration, maxPath int) (*x509.Certificate, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	now := a.clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Bulkhead"}, OrganizationalUnit: []string{a.td.Name()}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPath,
		MaxPathLenZero:        maxPath == 0,
		URIs:                  []*url.URL{a.td.ID().URL()},
	}
	signer := parentKey
	if parent == nil {
		parent, signer = tmpl, key
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("ca: create %s: %w", cn, err)
	}
	return x509.ParseCertificate(der)
}

// TrustDomain returns the CA's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Root returns the trust anchor.
func (a *Authority) Root() *x509.Certificate { return a.root }

// Intermediate returns the signing CA certificate.
func (a *Authority) Intermediate() *x509.Certificate { return a.intermediate }

// RootFingerprint is the SHA-256 of the root certificate's DER.
func (a *Authority) RootFingerprint() [32]byte { return sha256.Sum256(a.root.Raw) }

// X509Bundle is the trust bundle as a go-spiffe bundle source.
func (a *Authority) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(a.td, []*x509.Certificate{a.root})
}

// bundleSequence is the bundle's spiffe_sequence. The root is created once
// and never rotated, so the bundle's content, and thus its sequence, never
// changes; root rotation must increment it.
const bundleSequence = 1

// SPIFFEBundle returns the trust bundle in the SPIFFE bundle format.
func (a *Authority) SPIFFEBundle() ([]byte, error) {
	b := spiffebundle.FromX509Authorities(a.td, []*x509.Certificate{a.root})
	b.SetRefreshHint(BundleRefreshHint)
	b.SetSequenceNumber(bundleSequence)
	out, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("ca: marshal bundle: %w", err)
	}
	return out, nil
}

// BundlePEM returns the trust anchors as PEM (svid_bundle.pem).
func (a *Authority) BundlePEM() []byte { return EncodeCerts(a.root) }

// SVIDRequest describes a certificate to issue.
type SVIDRequest struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	TTL       time.Duration
	// NotAfter, when set, is a hard bound on the certificate's expiry (a
	// delegation's end): the certificate never outlives it, however late
	// the signing clock reads.
	NotAfter time.Time
	// DNSNames and IPs are for component certificates that serve TLS.
	DNSNames []string
	IPs      []net.IP
	// Attestation, when set, is what was proven about the key; the
	// certificate states it (see package attestation).
	Attestation attestation.Claims
}

// SignSVID issues an X.509-SVID: exactly one URI SAN (the SPIFFE ID),
// digitalSignature key usage, not a CA, valid for TTL (capped by MaxSVIDTTL
// and the intermediate's own expiry). It returns the leaf; the chain to send
// is the leaf followed by Intermediate().
func (a *Authority) SignSVID(req SVIDRequest) (*x509.Certificate, error) {
	if req.ID.IsZero() || req.ID.TrustDomain() != a.td {
		return nil, fmt.Errorf("ca: SPIFFE ID %q is not in trust domain %s", req.ID, a.td)
	}
	if err := CheckPublicKey(req.PublicKey); err != nil {
		return nil, err
	}
	if req.TTL <= 0 {
		return nil, errors.New("ca: TTL must be positive")
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	now := a.clock.Now()
	notBefore := now.Add(-Backdate)
	if notBefore.Before(a.intermediate.NotBefore) {
		notBefore = a.intermediate.NotBefore
	}
	notAfter := now.Add(min(req.TTL, MaxSVIDTTL))
	if notAfter.After(a.intermediate.NotAfter) {
		notAfter = a.intermediate.NotAfter
	}
	// X.509 times have whole seconds and encoding drops the fraction, so
	// the bound is truncated first: a later second would outlive it.
	if bound := req.NotAfter.Truncate(time.Second); !req.NotAfter.IsZero() && notAfter.After(bound) {
		notAfter = bound
	}
	if !notAfter.After(now) {
		return nil, errors.New("ca: the certificate would already be expired")
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Bulkhead"}, CommonName: req.ID.Path()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{req.ID.URL()},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
	}
	if req.Attestation != (attestation.Claims{}) {
		p, err := attestation.Policies(req.Attestation)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
		}
		tmpl.Policies = p
		tmpl.Subject.SerialNumber = attestation.SubjectSerial(req.Attestation)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.intermediate, req.PublicKey, a.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign SVID: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Revoked is one CRL entry.
type Revoked struct {
	Serial string // lowercase hex
	At     time.Time
}

// CRL returns a DER CRL signed by the intermediate, numbered number.
func (a *Authority) CRL(entries []Revoked, number int64) ([]byte, error) {
	now := a.clock.Now()
	list := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: now,
		NextUpdate: now.Add(CRLValidity),
	}
	for _, e := range entries {
		sn, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("ca: bad serial %q in revocation list", e.Serial)
		}
		list.RevokedCertificateEntries = append(list.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: sn, RevocationTime: e.At,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, list, a.intermediate, a.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	return der, nil
}

// NewSerial returns a random positive 127-bit serial number.
func NewSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// SerialHex renders a certificate serial as lowercase hex, the form stored
// and shown everywhere.
func SerialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// EncodeCerts returns certificates as concatenated PEM.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParseCerts parses concatenated PEM certificates.
func ParseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("ca: no certificates in PEM")
	}
	return out, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: read %s: %w", path, err)
	}
	certs, err := ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return certs[0], nil
}

func writeCert(path string, c *x509.Certificate) error {
	return WriteFileAtomic(path, EncodeCerts(c), 0o644)
}
