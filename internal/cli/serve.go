package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/server"
)

func (e *env) serveCmd() *cobra.Command {
	var (
		listen, trustDomain, store string
		sans                       []string
		svidTTL, operatorTTL       time.Duration
		issuer                     string
		tokenTTL                   time.Duration
		maxDepth                   int
		gatewayConfig              string
		metricsListen              string
		initStore                  bool
		caKey                      string
		tpmEKCA                    string
		consoleOrigin              string
		tpmPCRs                    []string
		auditOpts                  auditServeOptions
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane (CA, identity API) on HTTPS",
		Long: `Run the control plane. The first start creates the CA for the trust domain,
the server's certificate and a bootstrap operator credential in
DATA-DIR/operator; later starts reuse them.

The embedded default keeps everything in DATA-DIR (SQLite); --store
postgres://... uses PostgreSQL instead.

Nothing is lost silently: serve refuses an empty store when DATA-DIR holds
the keys of a control plane that has run (a lost disk, a wrong volume, a
wrong --store; --init starts anew on purpose), a master key that is missing
or not the store's, and a data directory another serve is using.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := spiffeid.TrustDomainFromString(trustDomain)
			if err != nil {
				return fmt.Errorf("--trust-domain: %w", err)
			}
			cfg := server.Config{DataDir: e.dataDir, Store: store, Listen: listen, TrustDomain: td,
				ExtraSANs: sans, DefaultSVIDTTL: svidTTL, OperatorTTL: operatorTTL,
				Issuer: issuer, TokenTTL: tokenTTL, MaxDelegationDepth: maxDepth, GatewayConfig: gatewayConfig,
				MetricsListen: metricsListen, Init: initStore, CAKey: caKey, TPMEKCA: tpmEKCA, ConsoleOrigin: consoleOrigin}
			if cfg.TPMPCRs, err = parsePCRs(tpmPCRs); err != nil {
				return err
			}
			auditOpts.apply(&cfg)
			srv, err := server.New(cmd.Context(), cfg, clock.Real{}, e.logger)
			if err != nil {
				return err
			}
			if err := srv.Listen(); err != nil {
				return err
			}
			e.logger.Info("control plane ready",
				"url", "https://"+srv.Addr(), "trust_domain", td.Name(), "operator_credentials", srv.OperatorDir())
			if addr := srv.GatewayAddr(); addr != "" {
				e.logger.Info("gateway ready", "url", "https://"+addr)
			}
			if addr := srv.MetricsAddr(); addr != "" {
				e.logger.Info("metrics ready", "url", "http://"+addr+"/metrics")
			}
			return srv.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", server.DefaultListen, "HTTPS listen address")
	f.StringVar(&trustDomain, "trust-domain", server.DefaultTrustDomain, "SPIFFE trust domain (fixed at first start)")
	f.StringVar(&store, "store", "", "store: empty for SQLite in the data directory, or postgres://...")
	f.StringSliceVar(&sans, "san", nil, "extra DNS name or IP for the server certificate (repeatable)")
	f.DurationVar(&svidTTL, "svid-ttl", 0, "default SVID lifetime for new agents (default 1h)")
	f.DurationVar(&operatorTTL, "operator-ttl", 0, "lifetime of the bootstrap operator credential (default 24h)")
	f.StringVar(&caKey, "ca-key", "", `keep the CA's keys in a PKCS#11 token (an HSM): "pkcs11:token=LABEL?module-path=/path/lib.so&pin-source=file:PATH" (or the PIN in $`+ca.DefaultPINEnv+`); see docs/hardware.md`)
	f.StringVar(&consoleOrigin, "console-origin", "", "the console's origin as browsers reach it, https://HOST[:PORT] (default https://localhost:PORT); passkeys are bound to its host")
	f.StringVar(&tpmEKCA, "tpm-ek-ca", "", "PEM file of TPM makers' CAs: a TPM whose endorsement key certificate chains to one may enroll an agent registered with --tpm-ek ek-ca")
	f.StringSliceVar(&tpmPCRs, "tpm-pcr", nil, "INDEX=SHA256-HEX: a PCR value every attested enrollment's quote must show (repeatable)")
	f.BoolVar(&initStore, "init", false, "start a new, empty store although DATA-DIR holds the CA and audit key of a control plane that has run")
	f.StringVar(&issuer, "issuer", "", "OAuth issuer URL, one for every replica of the trust domain: the first replica stores it in the database (default: its https://LISTEN-ADDRESS); set it to the load balancer URL in front of several replicas")
	f.DurationVar(&tokenTTL, "token-ttl", 0, "access token lifetime (default 5m, at most 15m)")
	f.IntVar(&maxDepth, "max-delegation-depth", 0, "deepest sub-agent delegation (default 3)")
	f.StringVar(&gatewayConfig, "gateway", "", "gateway configuration file: run the gateway in this process too")
	f.StringVar(&metricsListen, "metrics-listen", "", "loopback address serving /metrics in plain HTTP for a local Prometheus (off by default; /metrics is always on the HTTPS listener for operators and components)")
	auditOpts.flags(f)
	return cmd
}

// parsePCRs reads --tpm-pcr values.
func parsePCRs(vals []string) (map[int][]byte, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[int][]byte{}
	for _, v := range vals {
		i, h, ok := strings.Cut(v, "=")
		n, err := strconv.Atoi(i)
		d, herr := hex.DecodeString(h)
		if !ok || err != nil || n < 0 || n > 23 || herr != nil || len(d) != sha256.Size {
			return nil, fmt.Errorf("--tpm-pcr %q: want INDEX=SHA256-HEX with INDEX 0-23", v)
		}
		out[n] = d
	}
	return out, nil
}
