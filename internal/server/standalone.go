package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/run"
	"github.com/bulkhead-dev/bulkhead/internal/svidfile"
)

// StandaloneGateway runs a gateway on its own (`bulkhead gateway`), talking to the control plane over
// mTLS as spiffe://TD/bulkhead/gateway/NAME.
type StandaloneGateway struct {
	Config *gateway.Config
	// ServerURL is the control plane's URL, or several replicas' URLs
	// separated by commas: the gateway fails over between them.
	ServerURL string
	// MaxStale bounds how long the gateway serves on its cached
	// revocation state while no replica answers (default gateway.DefaultMaxStale).
	MaxStale time.Duration
	// Dir holds the gateway's own credential (svid.pem, ...).
	Dir string
	// JoinToken, if set, enrolls the gateway when Dir has no credential:
	// its key is generated here and no operator credential is needed.
	JoinToken string
	// Operator, if set, bootstraps the gateway's credential when Dir has
	// none and there is no JoinToken, and registers the gateway's resource.
	Operator *client.Client
	Clock    clock.Clock
	Logger   *slog.Logger
	// Ready, if set, is called with the bound address once serving.
	Ready func(addr string)
	// AuditKey pins the control plane's audit log key (note format) for
	// the gateway's witness; empty trusts the key the control plane names
	// on first use, then kept in Dir/audit_witness.json.
	AuditKey string
	// WitnessObserver, if set, hears of what the witness sees (metrics).
	WitnessObserver audit.WitnessObserver
}

// Run serves until ctx ends.
func (sa *StandaloneGateway) Run(ctx context.Context) error {
	cfg, logger := sa.Config, sa.Logger
	if !svidfile.Exists(sa.Dir) {
		switch {
		case sa.JoinToken != "":
			svid, err := client.Enroll(ctx, sa.ServerURL, sa.JoinToken, sa.Dir)
			if err != nil {
				return fmt.Errorf("gateway: enroll with the join token: %w", err)
			}
			logger.Info("enrolled the gateway with its join token", "dir", sa.Dir, "spiffe_id", svid.ID)
		case sa.Operator != nil:
			if _, err := sa.Operator.IssueComponentSVID(ctx, "gateway", cfg.Name, sa.Dir); err != nil {
				return fmt.Errorf("gateway: bootstrap credential: %w", err)
			}
			logger.Info("issued the gateway's credential", "dir", sa.Dir, "name", cfg.Name)
		default:
			return fmt.Errorf("gateway: no credential in %s; enroll with a join token ('bulkhead gateway join-token %s', then --join-token) or the operator credential (--credentials)", sa.Dir, cfg.Name)
		}
	}
	rot, err := client.NewRotator(sa.ServerURL, sa.Dir, logger)
	if err != nil {
		return err
	}
	rot.Clock = sa.Clock
	src, cp := rot.Source(), rot.Client()
	if want := "/bulkhead/gateway/" + cfg.Name; src.ID().Path() != want {
		return fmt.Errorf("gateway: the credential in %s is %s, not a gateway named %s", sa.Dir, src.ID(), cfg.Name)
	}
	// URLs are built on the first replica; the client's transport sends
	// each request to whichever replica answers.
	base := cp.Bases()[0]
	issuer, err := discoverIssuer(ctx, cp.HTTPClient(), base)
	if err != nil {
		return err
	}
	if sa.Operator != nil {
		if _, err := sa.Operator.AddResource(ctx, cfg.Resource, nil); err != nil && !client.IsCode(err, "conflict") {
			return fmt.Errorf("gateway: register resource %s: %w", cfg.Resource, err)
		}
	}
	stream := &http.Client{Transport: cp.HTTPClient().Transport} // no overall timeout: the event stream is long-lived
	jwks := &gateway.JWKS{URL: base + "/oauth2/jwks", HTTP: cp.HTTPClient(), Clock: sa.Clock, Logger: logger}
	if err := jwks.Refresh(ctx); err != nil {
		return err
	}
	maxStale := sa.MaxStale
	if maxStale <= 0 {
		maxStale = gateway.DefaultMaxStale
	}
	rev := gateway.NewRevocations(logger).Bound(sa.Clock, maxStale)
	recorder := audit.New(gateway.RemoteAudit{Client: cp}, sa.Clock, logger)
	// The gateway witnesses the control plane's log from its own disk,
	// where an intruder in the control plane's database cannot reach.
	witness, err := audit.NewWitness(audit.WitnessConfig{Source: gateway.RemoteCheckpoints{Client: cp}, Key: sa.AuditKey, FirstKey: cp.AuditKey,
		File: filepath.Join(sa.Dir, gateway.WitnessFile), Recorder: recorder, Actor: audit.Actor{Kind: audit.ActorWorkload, ID: src.ID().String()},
		Observer: sa.WitnessObserver, Clock: sa.Clock, Logger: logger.With("component", "audit-witness")})
	if err != nil {
		return err
	}
	g, err := gateway.New(cfg, gateway.Deps{Verifier: &gateway.Verifier{Issuer: issuer, Audience: cfg.Resource, Keys: jwks, Clock: sa.Clock},
		Revocations: rev, Decider: gateway.RemoteDecider{Client: cp}, Audit: recorder, Secrets: gateway.RemoteSecrets{Client: cp}, Tasks: gateway.RemoteTasks{Client: cp},
		Budgets: gateway.RemoteBudgets{Client: cp}, Baselines: gateway.RemoteBaselines{Client: cp}, ID: src.ID(), Clock: sa.Clock, Logger: logger, AuthorizationServer: issuer})
	if err != nil {
		return err
	}
	defer g.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", cfg.Listen, err)
	}
	srv := g.Server(gateway.TLSConfig(tlsconfig.GetCertificate(src), peer.VerifyConnection(src, sa.Clock)))
	if sa.Ready != nil {
		sa.Ready(ln.Addr().String())
	}
	feed := func(ctx context.Context) error {
		return rev.Feed(ctx, gateway.RemoteEvents{HTTP: stream, Base: base}, func(ctx context.Context) bool {
			select {
			case <-ctx.Done():
				return false
			case <-sa.Clock.After(time.Second):
				return true
			}
		})
	}
	return run.Group(ctx, logger, run.Func("credential", rot.Run), run.Func("witness", witness.Run), run.Func("jwks", jwks.Run),
		run.Func("revocations", feed), run.Func("gateway", func(ctx context.Context) error {
			if err := g.RecordStart(ctx); err != nil {
				// Evidence missing, not safety: every decision is still recorded first.
				logger.Error("the gateway's start is not on record; assessments will not see what it serves", "err", err)
			}
			return httpx.ServeTLSUntil(ctx, srv, ln)
		}))
}

func discoverIssuer(ctx context.Context, hc *http.Client, serverURL string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(serverURL, "/")+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		return "", fmt.Errorf("gateway: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("gateway: discover the authorization server: %w", err)
	}
	defer resp.Body.Close()
	var md struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&md); err != nil || md.Issuer == "" {
		return "", fmt.Errorf("gateway: authorization server metadata: status %d: %v", resp.StatusCode, err)
	}
	return md.Issuer, nil
}
