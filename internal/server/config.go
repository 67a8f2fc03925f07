package server

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/identity"
)

// Config is the validated runtime configuration of `bulkhead serve`.
type Config struct {
	// DataDir holds the CA, the server's and the bootstrap operator's
	// credentials, and the embedded SQLite database. Required.
	DataDir string
	// Store is empty for SQLite in DataDir, or a postgres:// URL.
	Store string
	// Listen is the HTTPS address of the control plane.
	Listen string
	// TrustDomain is fixed at first start.
	TrustDomain spiffeid.TrustDomain
	// ExtraSANs are DNS names or IPs added to the server certificate.
	ExtraSANs []string
	// DefaultSVIDTTL applies to agents created without --ttl.
	DefaultSVIDTTL time.Duration
	// OperatorTTL is the lifetime of the bootstrap operator credential,
	// renewed by the server at half-life.
	OperatorTTL time.Duration
	// Init starts a new, empty store on a data directory whose CA and
	// audit key have been used before (see checkNotLost).
	Init bool
	// Issuer is the OAuth issuer URL, one per trust domain: the first
	// replica stores it (empty: https://LISTEN-ADDRESS of that replica) and
	// every later one uses the stored value.
	Issuer string
	// TokenTTL is the access token lifetime (default 5m, at most 15m).
	TokenTTL time.Duration
	// MaxDelegationDepth bounds sub-agent delegation (default 3).
	MaxDelegationDepth int
	// GatewayConfig, if set, is a gateway configuration file; the gateway
	// then runs in this process beside the control plane.
	GatewayConfig string
	// AuditCheckpointEvery and AuditCheckpointInterval: the audit log is
	// signed after this many events or this long, whichever comes first
	// (defaults 10000 and 5s).
	AuditCheckpointEvery    int64
	AuditCheckpointInterval time.Duration
	// AuditWebhook, if set, receives every audit event as JSON lines in
	// AuditWebhookFormat (ocsf, the default, or json).
	AuditWebhook       string
	AuditWebhookFormat string
	// CAKey, if set, is a PKCS#11 URI (ca.ParsePKCS11URI): the CA's keys
	// are generated and kept in that token (an HSM), never on disk.
	CAKey string
	// TPMEKCA, if set, is a PEM file of TPM makers' CAs trusted to vouch
	// for endorsement keys; TPMPCRs are PCR values every attested
	// enrollment's quote must show.
	TPMEKCA string
	TPMPCRs map[int][]byte
	// ConsoleOrigin is the console's origin as browsers reach it
	// (https://HOST[:PORT]); empty means https://localhost:PORT.
	ConsoleOrigin string
	// AlertWebhook, if set, receives the gateways' anomaly records
	// (gateway.anomaly) alone, in the same format: OCSF Detection Findings.
	AlertWebhook string
	// AuditWitnessURL, if set, receives every newly signed checkpoint
	// (POSTed as a signed note): a copy outside the database.
	AuditWitnessURL string
	// MetricsListen, if set, is a loopback address serving /metrics in
	// plain HTTP for a local Prometheus agent. /metrics is always served on
	// Listen too, over mTLS, to operators and components.
	MetricsListen string
}

// Defaults.
const (
	DefaultListen      = "127.0.0.1:8443"
	DefaultTrustDomain = "bulkhead.local"
	DefaultDataDir     = "./bulkhead-data"
	DefaultOperatorTTL = 24 * time.Hour
	// ServerCertTTL is the serving certificate's lifetime; it is renewed at
	// half-life while the server runs.
	ServerCertTTL = 24 * time.Hour
)

// Paths inside the data directory.
func (c Config) caDir() string       { return filepath.Join(c.DataDir, "ca") }
func (c Config) serverDir() string   { return filepath.Join(c.DataDir, "server") }
func (c Config) OperatorDir() string { return filepath.Join(c.DataDir, "operator") }

// masterKeyPath is the secretbox key sealing secrets kept in the store.
func (c Config) masterKeyPath() string { return filepath.Join(c.DataDir, "master.key") }

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("config: data directory is required")
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("config: listen address %q: %w", c.Listen, err)
	}
	if c.TrustDomain.IsZero() {
		c.TrustDomain = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	if c.DefaultSVIDTTL == 0 {
		c.DefaultSVIDTTL = identity.DefaultSVIDTTL
	}
	if c.OperatorTTL == 0 {
		c.OperatorTTL = DefaultOperatorTTL
	}
	if c.Issuer != "" && !strings.HasPrefix(c.Issuer, "https://") {
		return fmt.Errorf("config: issuer %q must be an https URL", c.Issuer)
	}
	if c.OperatorTTL < 10*time.Minute || c.OperatorTTL > 30*24*time.Hour {
		return fmt.Errorf("config: operator TTL %s is outside [10m, 720h]", c.OperatorTTL)
	}
	return nil
}

// serverSANs returns the DNS names and IPs the serving certificate must
// cover: the listen host (all local addresses for a wildcard), localhost,
// and any extras.
func (c Config) serverSANs() ([]string, []net.IP) {
	host, _, _ := net.SplitHostPort(c.Listen)
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	add := func(h string) {
		if h == "" {
			return
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsUnspecified() {
				if addrs, err := net.InterfaceAddrs(); err == nil {
					for _, a := range addrs {
						if n, ok := a.(*net.IPNet); ok {
							ips = appendIP(ips, n.IP)
						}
					}
				}
				return
			}
			ips = appendIP(ips, ip)
			return
		}
		for _, d := range dns {
			if d == h {
				return
			}
		}
		dns = append(dns, h)
	}
	add(host)
	for _, s := range c.ExtraSANs {
		add(s)
	}
	return dns, ips
}

func appendIP(ips []net.IP, ip net.IP) []net.IP {
	for _, have := range ips {
		if have.Equal(ip) {
			return ips
		}
	}
	return append(ips, ip)
}
