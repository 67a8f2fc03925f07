// Package server wires the control plane: it builds the store, the CA, the
// audit log and the services in one straight line, then serves them over
// HTTPS until its context ends.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/assess"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/console"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/metrics"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
	"github.com/bulkhead-dev/bulkhead/internal/run"
	"github.com/bulkhead-dev/bulkhead/internal/secret"
	"github.com/bulkhead-dev/bulkhead/internal/secretbox"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// IDs of the control plane's own identities.
const (
	ServerPath   = "/bulkhead/server"
	OperatorPath = "/operator/admin"
)

// Server is a running control plane; Run starts one.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	clock    clock.Clock
	db       *store.DB
	ca       *ca.Authority
	audit    *audit.Log
	identity *identity.Service
	policy   *policy.Service
	elev     *elevation.Service
	token    *token.Service
	secrets  *secret.Service
	evidence evidence
	metrics  *metrics.Metrics
	gateway  *inProcessGateway
	serving  *ownCred
	operator *ownCred
	listener net.Listener
	// box is the master key; console is built once the listener's port is
	// known (its default origin names it).
	box     *secretbox.Box
	console *console.Console
	http    *http.Server
	// metricsLn is the plain-HTTP loopback listener of /metrics, if any.
	metricsLn net.Listener
	// unlock releases the data directory (see LockDataDir).
	unlock func()
	// keys is the CA's PKCS#11 token, if its keys are in one.
	keys      *ca.PKCS11KeyStore
	closeOnce sync.Once
}

// New builds a control plane from cfg: opens (and migrates) the store,
// loads or creates the CA, and makes sure the serving and bootstrap operator
// credentials exist. It does not listen yet.
func New(ctx context.Context, cfg Config, clk clock.Clock, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, logger: logger, clock: clk}
	unlock, err := LockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, cfg.Store, cfg.DataDir, logger)
	if err != nil {
		unlock()
		return nil, err
	}
	s.db, s.unlock = db, unlock
	if err := s.build(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the store and the data directory. Serve closes them when
// it returns; Close is for a server that is built but not served.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.db.Close()
		if s.keys != nil {
			_ = s.keys.Close()
		}
		s.unlock()
	})
}

func (s *Server) build(ctx context.Context) error {
	cfg := s.cfg
	if err := s.checkNotLost(ctx); err != nil {
		return err
	}
	td, err := s.db.SetMetaOnce(ctx, "trust_domain", cfg.TrustDomain.Name())
	if err != nil {
		return err
	}
	if td != cfg.TrustDomain.Name() {
		return fmt.Errorf("server: the store belongs to trust domain %q, not %q", td, cfg.TrustDomain.Name())
	}
	box, err := s.openMasterKey(ctx)
	if err != nil {
		return err
	}
	s.box = box
	if err := s.restoreKeys(ctx, box); err != nil {
		return err
	}
	caCfg := ca.Config{TrustDomain: cfg.TrustDomain, Dir: cfg.caDir(), Clock: s.clock}
	if cfg.CAKey != "" {
		u, err := ca.ParsePKCS11URI(cfg.CAKey)
		if err != nil {
			return fmt.Errorf("config: --ca-key: %w", err)
		}
		ks, err := ca.OpenPKCS11(u)
		if err != nil {
			return err
		}
		s.keys, caCfg.Keys = ks, ks
		s.logger.Info("the CA's keys are in a PKCS#11 token", "token", u.Token, "module", u.Module)
	}
	authority, created, err := ca.LoadOrCreate(caCfg)
	if err != nil {
		return err
	}
	s.ca = authority
	fp := authority.RootFingerprint()
	storedFP, err := s.db.SetMetaOnce(ctx, "ca_root_sha256", hex.EncodeToString(fp[:]))
	if err != nil {
		return err
	}
	if storedFP != hex.EncodeToString(fp[:]) {
		// Two replicas on one store must share one CA: copy DATA/ca.
		return fmt.Errorf("server: the store was initialized by a CA with root SHA-256 %s, but %s holds a different root; remove that directory to restore the root from the store", storedFP, cfg.caDir())
	}
	if created {
		s.logger.Info("created certificate authority", "trust_domain", cfg.TrustDomain.Name(), "dir", cfg.caDir(), "root_sha256", storedFP)
	}
	s.audit = audit.New(s.db, s.clock, s.logger)
	s.metrics = metrics.New()
	s.audit.Observe(s.metrics)
	verifier := attestation.Verifier{PCRs: cfg.TPMPCRs}
	if cfg.TPMEKCA != "" {
		pem, err := os.ReadFile(cfg.TPMEKCA)
		if err != nil {
			return fmt.Errorf("config: --tpm-ek-ca: %w", err)
		}
		verifier.EKRoots = x509.NewCertPool()
		if !verifier.EKRoots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("config: --tpm-ek-ca %s holds no certificate", cfg.TPMEKCA)
		}
	}
	s.identity, err = identity.New(identity.Config{Store: s.db, CA: authority, Audit: s.audit, Clock: s.clock,
		Logger: s.logger, DefaultSVIDTTL: cfg.DefaultSVIDTTL, Sealer: box, Attestation: verifier})
	if err != nil {
		return err
	}
	// Manifests' policies are managed sets the PDP evaluates beside the
	// live one; tasks are checked by the token service.
	s.policy, err = policy.New(ctx, policy.Config{Store: s.db, Audit: s.audit, TrustDomain: cfg.TrustDomain, Clock: s.clock, Logger: s.logger,
		Managed: s.db, Observer: s.metrics})
	if err != nil {
		return err
	}
	s.elev, err = elevation.New(elevation.Config{Store: s.db, Audit: s.audit, Policies: s.policy, Catalog: s.policy,
		Clock: s.clock, Logger: s.logger.With("component", "elevation")})
	if err != nil {
		return err
	}
	tcfg := token.Config{Store: s.db, Identities: s.identity, Box: box, Audit: s.audit,
		Bundle: authority.X509Bundle(), Clock: s.clock, Logger: s.logger, Issuer: cfg.Issuer,
		TTL: cfg.TokenTTL, MaxDepth: cfg.MaxDelegationDepth, Tasks: s.elev}
	if s.keys != nil {
		// The token, like the CA's keys: signing keys made in it.
		tcfg.HardwareKeys = s.keys
	}
	s.token, err = token.New(ctx, tcfg)
	if err != nil {
		return err
	}
	s.secrets, err = secret.New(secret.Config{Store: s.db, Box: box, Audit: s.audit, Clock: s.clock, Logger: s.logger})
	if err != nil {
		return err
	}
	s.gauges()
	if err := s.buildEvidence(ctx); err != nil {
		return err
	}
	if err := s.storeKeys(ctx, box); err != nil {
		return err
	}
	if err := s.buildGateway(ctx); err != nil {
		return err
	}
	dns, ips := cfg.serverSANs()
	s.serving = &ownCred{dir: cfg.serverDir(), id: spiffeid.RequireFromPath(cfg.TrustDomain, ServerPath), ttl: ServerCertTTL,
		dns: dns, ips: ips, action: audit.ActionSVIDIssue, ids: s.identity, root: authority.Root(), clock: s.clock, logger: s.logger}
	s.operator = &ownCred{dir: cfg.OperatorDir(), id: spiffeid.RequireFromPath(cfg.TrustDomain, OperatorPath), ttl: cfg.OperatorTTL,
		action: audit.ActionOperatorIssue, ids: s.identity, root: authority.Root(), clock: s.clock, logger: s.logger}
	for _, c := range []*ownCred{s.serving, s.operator} {
		if err := c.ensure(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Handler returns the control plane's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.identity.Routes(mux, s.logger)
	s.ingestRoutes(mux)
	s.policy.Routes(mux, s.identity.Guard(s.logger), s.logger)
	s.token.Routes(mux, s.identity.Guard(s.logger), s.logger)
	s.secrets.Routes(mux, s.identity.Guard(s.logger), s.logger)
	s.identity.ComponentRoutes(mux, s.logger)
	s.identity.OperatorRoutes(mux, s.logger)
	s.elev.Routes(mux, s.identity.Guard(s.logger), s.logger)
	reach.Routes(mux, s.identity.Guard(s.logger), s.policy, s.elev, s.db, s.clock, s.logger)
	baseline.Routes(mux, s.identity.Guard(s.logger), operatorsAndGateways, s.identity, s.baselines(), s.logger)
	assess.Routes(mux, s.identity.Guard(s.logger), s.assessDeps(), s.db, s.clock, s.logger)
	spend, release := budget.Handlers(s.db, func(r *http.Request) audit.Actor {
		p, _ := peer.FromContext(r.Context())
		return p.Actor()
	}, s.audit, s.logger)
	mux.Handle("POST /v1/budgets/spend", s.identity.Guard(s.logger).Require(gatewaysOnly, spend))
	mux.Handle("POST /v1/budgets/release", s.identity.Guard(s.logger).Require(gatewaysOnly, release))
	mux.Handle("GET /metrics", s.identity.Guard(s.logger).Require(peer.Kinds(audit.ActorOperator, audit.ActorWorkload), s.metrics.Handler()))
	mux.Handle("GET /v1/events", s.identity.Guard(s.logger).Require(peer.Kinds(audit.ActorOperator, audit.ActorWorkload),
		s.untilCertExpires(audit.StreamHandler(s.audit, s.db, s.logger))))
	s.evidenceRoutes(mux)
	if s.console != nil {
		s.console.Routes(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// TLSConfig is the control plane's server TLS configuration: TLS 1.3, the
// server's own SVID, and client SVIDs verified when presented.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.serving.tls.Load(), nil
		},
		// Public endpoints (bundle, CRL, enroll) take callers without a
		// certificate; every other endpoint refuses them (peer.Require).
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: peer.VerifyConnection(s.ca.X509Bundle(), s.clock),
	}
}

// Listen binds the listen address. Addr is valid afterwards.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Listen, err)
	}
	s.listener = ln
	if s.cfg.MetricsListen != "" {
		if s.metricsLn, err = httpx.ListenLoopback(s.cfg.MetricsListen, "it serves metrics without authentication"); err != nil {
			_ = ln.Close()
			return fmt.Errorf("server: metrics: %w", err)
		}
	}
	if err := s.shareIssuer(); err != nil {
		_ = ln.Close()
		return err
	}
	if err := s.newConsole(); err != nil {
		_ = ln.Close()
		return err
	}
	return s.listenGateway()
}

// assessDeps is what the tier assessment reads, for its API and the
// console alike.
func (s *Server) assessDeps() assess.Deps {
	return assess.Deps{Agents: s.identity, Events: s.db, PDP: s.policy, Manifests: s.elev, Grants: s.elev, TokenTTL: s.token.TTL()}
}

// consoleReports computes the console's evidence views as the assess and
// blast-radius APIs do.
type consoleReports struct{ s *Server }

func (r consoleReports) Assessment(ctx context.Context) (api.Assessment, error) {
	s := r.s
	return assess.Assess(ctx, s.assessDeps(), s.clock.Now())
}

func (r consoleReports) BlastRadius(ctx context.Context, agent string) (api.BlastRadius, error) {
	return reach.Answer(ctx, r.s.policy, r.s.elev, r.s.db, api.BlastRadiusRequest{Agent: agent}, r.s.clock)
}

// newConsole builds the operators' console for --console-origin, by
// default https://localhost:PORT (a passkey's relying party is a name,
// never an IP address).
func (s *Server) newConsole() error {
	origin := s.cfg.ConsoleOrigin
	if origin == "" {
		_, port, _ := net.SplitHostPort(s.listener.Addr().String())
		origin = "https://localhost:" + port
	}
	c, err := console.New(console.Config{Store: s.db, Audit: s.audit, Sealer: s.box, Clock: s.clock, Logger: s.logger,
		Origin: origin, Guard: s.identity.Guard(s.logger), Elevations: s.elev, Agents: s.identity, Policies: s.policy,
		Evidence: console.Evidence{Events: s.db, Stream: audit.StreamHandler(s.audit, s.db, s.logger), Verify: func(ctx context.Context) (audit.Report, error) {
			return audit.Verify(ctx, s.db, audit.VerifyOptions{Verifier: s.evidence.key.Verifier})
		}}, Reports: consoleReports{s}})
	if err != nil {
		return fmt.Errorf("config: --console-origin: %w", err)
	}
	s.console = c
	s.identity.OnOperatorRevoke(c.RevokeOperator)
	return nil
}

// shareIssuer makes the token issuer the trust domain's, not this
// replica's: the first replica to start stores it (--issuer, or its own
// address), and every replica after it issues and accepts tokens with
// that one value, so a token from any replica verifies at every gateway.
// Set --issuer to the load balancer's URL in front of several replicas.
func (s *Server) shareIssuer() error {
	want := s.cfg.Issuer
	if want == "" {
		want = "https://" + s.listener.Addr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stored, err := s.db.SetMetaOnce(ctx, "issuer", want)
	if err != nil {
		return fmt.Errorf("server: store the token issuer: %w", err)
	}
	if s.cfg.Issuer != "" && stored != s.cfg.Issuer {
		return fmt.Errorf("server: --issuer %q differs from the trust domain's issuer %q stored by the first replica; every replica must issue with one issuer: pass --issuer %q or omit it", s.cfg.Issuer, stored, stored)
	}
	s.token.SetIssuer(stored)
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.listener.Addr().String() }

// TrustDomain is the server's trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.cfg.TrustDomain }

// OperatorDir is the bootstrap operator's credential directory.
func (s *Server) OperatorDir() string { return s.cfg.OperatorDir() }

// baselines learns agents' baselines from the audit log, kept in the
// store as they are learned.
func (s *Server) baselines() baseline.StoredSource {
	return baseline.StoredSource{Store: s.db, Events: s.db, Roles: s.db, Config: baseline.DefaultConfig, Clock: s.clock, Logger: s.logger}
}

// Store exposes the store to tests that inspect or tamper with it.
func (s *Server) Store() *store.DB { return s.db }

// Serve runs the control plane until ctx ends, then shuts down gracefully.
// Listen must have been called.
func (s *Server) Serve(ctx context.Context) error {
	defer s.Close()
	if _, err := s.audit.Record(ctx, audit.Event{Actor: audit.Actor{Kind: audit.ActorSystem, ID: "bulkhead-serve"},
		Action: audit.ActionServerStart, Target: spiffeid.RequireFromPath(s.cfg.TrustDomain, ServerPath).String(),
		Decision: audit.Allow, Detail: map[string]string{"listen": s.Addr(), "store": s.db.Dialect()}}); err != nil {
		return fmt.Errorf("server: audit log unavailable at start: %w", err)
	}
	s.http = &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	components := []run.Component{
		run.Func("api", func(ctx context.Context) error { return httpx.ServeTLSUntil(ctx, s.http, s.listener) }),
		run.Func("server-credential", s.serving.refresh),
		run.Func("operator-credential", s.operator.refresh),
		run.Func("policy", s.policy.Run),
		run.Func("policy-changes", s.followPolicy),
		run.Func("token-keys", s.token.Run),
		// Jobs that must run on one replica at a time.
		s.exclusive("elevation-sweep", s.elev.Run),
	}
	components = append(components, s.evidenceComponents()...)
	if s.metricsLn != nil {
		components = append(components, run.Func("metrics", s.serveMetrics))
	}
	return run.Group(ctx, s.logger, append(components, s.gatewayComponents()...)...)
}

// exclusive runs job on one replica at a time: the replica that holds
// the job's lock (a PostgreSQL advisory lock; SQLite has one replica)
// runs it, the others take over when it dies.
func (s *Server) exclusive(name string, job func(context.Context) error) run.Component {
	return run.Exclusive{Name: name, Lead: s.db.TryLead, Job: job, Clock: s.clock, Logger: s.logger}.Component()
}

// followPolicy reloads the PDP as soon as any replica commits a change of
// policy, roles, the tool catalog or manifests (a PostgreSQL notification
// sent at commit), rather than at the next poll, which stays as the
// fallback for a missed notification. SQLite has one replica, which
// reloads as it changes.
func (s *Server) followPolicy(ctx context.Context) error {
	for {
		changes, err := s.db.PolicyChanges(ctx)
		switch {
		case errors.Is(err, audit.ErrNoFeed):
			<-ctx.Done()
			return nil
		case err != nil:
			s.logger.Warn("cannot listen for policy changes; the poll loads them", "err", err)
		default:
			for range changes {
				if err := s.policy.Reload(ctx); err != nil && ctx.Err() == nil {
					s.logger.Warn("policy reload after a change failed; the poll retries", "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(retryDelay):
		}
	}
}

// untilCertExpires ends a request (a stream) when the client certificate it
// was authenticated with expires: the client comes back with its rotated
// SVID and is authenticated again. A resumable stream loses nothing.
func (s *Server) untilCertExpires(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			ctx, cancel := clock.Until(r.Context(), s.clock, r.TLS.PeerCertificates[0].NotAfter)
			defer cancel()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// MetricsAddr is the plain-HTTP metrics address, or "" without one.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// serveMetrics serves GET /metrics, and nothing else, on the loopback
// metrics listener until ctx ends.
func (s *Server) serveMetrics(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: metrics: %w", err)
	}
	return nil
}

// gauges registers the figures read at each scrape.
func (s *Server) gauges() {
	// A scrape fails while the database refuses the log: the alert is
	// the missing figure as much as a large one.
	s.metrics.GaugeFunc("bulkhead_audit_journal_backlog", "Acknowledged audit events waiting in the SQLite audit journal for the database.",
		func(context.Context) (float64, error) {
			n, err := s.db.AuditBacklog()
			return float64(n), err
		})
	s.metrics.GaugeFunc("bulkhead_policy_live_version", "The policy version the PDP decides with (0: none applied).",
		func(context.Context) (float64, error) {
			live, _ := s.policy.State()
			return float64(live), nil
		})
	for _, g := range []struct {
		name, help string
		pick       func(elevation.Standing) int64
	}{
		{"bulkhead_standing_grants", "Grants in force outside an open task (zero by construction).", func(st elevation.Standing) int64 { return st.Standing }},
		{"bulkhead_active_grants", "Grants in force, all inside open tasks.", func(st elevation.Standing) int64 { return st.Active }},
		{"bulkhead_pending_elevations", "Elevation requests awaiting approval.", func(st elevation.Standing) int64 { return st.Pending }},
		{"bulkhead_open_tasks", "Tasks open now.", func(st elevation.Standing) int64 { return st.OpenTasks }},
	} {
		s.metrics.GaugeFunc(g.name, g.help, func(ctx context.Context) (float64, error) {
			st, err := s.elev.Standing(ctx)
			return float64(g.pick(st)), err
		})
	}
}

// Policy is the policy service; its PDP is the in-process decision API.
func (s *Server) Policy() *policy.Service { return s.policy }

// Elevation is the privilege scoping service (tests move its clock).
func (s *Server) Elevation() *elevation.Service { return s.elev }

// BundlePEM is the trust bundle (svid_bundle.pem).
func (s *Server) BundlePEM() []byte { return s.ca.BundlePEM() }

// Token is the OAuth authorization server (tests rotate its keys).
func (s *Server) Token() *token.Service { return s.token }
