package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/run"
	"github.com/bulkhead-dev/bulkhead/internal/secret"
)

// GatewayPath prefixes gateways' SPIFFE IDs.
const GatewayPath = "/bulkhead/gateway/"

// inProcessGateway is the gateway that `bulkhead serve --gateway FILE` runs
// beside the control plane: the same code as `bulkhead gateway`, wired to
// the PDP, audit log, token keys and secrets directly instead of over the
// network.
type inProcessGateway struct {
	gw       *gateway.Gateway
	verifier *gateway.Verifier
	cred     *ownCred
	rev      *gateway.Revocations
	listener net.Listener
	witness  *audit.Witness
}

// secretReveal reveals secrets to the in-process gateway as the gateway's
// own workload identity, so reveals are recorded like a remote gateway's.
type secretReveal struct {
	svc *secret.Service
	as  peer.Principal
}

func (r secretReveal) Reveal(ctx context.Context, name string) ([]byte, error) {
	return r.svc.Reveal(ctx, r.as, name)
}

// taskSource gives the in-process gateway the elevation service directly,
// acting as the gateway's workload identity, so its taint reports and grant
// uses are recorded like a remote gateway's.
type taskSource struct {
	svc *elevation.Service
	as  peer.Principal
}

var _ gateway.TaskSource = taskSource{}

func (t taskSource) TaskState(ctx context.Context, id string) (gateway.TaskState, error) {
	st, err := t.svc.State(ctx, id)
	if err != nil {
		return gateway.TaskState{}, err
	}
	out := gateway.TaskState{ID: st.Task.ID, Agent: st.Task.Agent, Manifest: st.Task.Manifest, Open: st.Open, Tainted: st.Task.Tainted,
		Limits: gateway.TaskLimits{Calls: st.Limits.Calls, ResponseBytes: st.Limits.ResponseBytes}}
	if !st.Open {
		ended := st.Task.Ended()
		out.Status, out.EndedAt = string(ended.Status), ended.At
	}
	for _, g := range st.Grants {
		out.Grants = append(out.Grants, gateway.TaskGrant{Elevation: g.ID, Name: elevation.GrantName(g.Manifest, g.Trigger),
			ExpiresAt: g.ExpiresAt, MaxUses: g.MaxUses, Uses: g.Uses})
	}
	return out, nil
}

func (t taskSource) ReportOutput(ctx context.Context, task, agent string, resource cedar.EntityUID, suspect string) (bool, bool, error) {
	return t.svc.TaintByOutput(ctx, t.as, task, agent, resource, suspect)
}

func (t taskSource) UseGrant(ctx context.Context, grant string, u gateway.GrantUse) error {
	_, err := t.svc.UseGrant(ctx, t.as, grant, elevation.Use{Task: u.Task, Agent: u.Agent, Resource: u.Resource, DecisionID: u.DecisionID})
	return err
}

// buildGateway prepares the in-process gateway; its listener is bound in
// Listen, once the issuer URL is known.
func (s *Server) buildGateway(ctx context.Context) error {
	if s.cfg.GatewayConfig == "" {
		return nil
	}
	b, err := os.ReadFile(s.cfg.GatewayConfig)
	if err != nil {
		return fmt.Errorf("server: gateway config: %w", err)
	}
	gcfg, err := gateway.ParseConfig(b, nil)
	if err != nil {
		return err
	}
	id := spiffeid.RequireFromPath(s.cfg.TrustDomain, GatewayPath+gcfg.Name)
	dns, ips := Config{Listen: gcfg.Listen}.serverSANs()
	cred := &ownCred{dir: filepath.Join(s.cfg.DataDir, "gateway", gcfg.Name), id: id, ttl: ServerCertTTL, dns: dns, ips: ips,
		action: audit.ActionSVIDIssue, ids: s.identity, root: s.ca.Root(), clock: s.clock, logger: s.logger}
	if err := cred.ensure(ctx); err != nil {
		return err
	}
	// Agents need tokens for the gateway's audience: register it.
	if _, err := s.token.AddResource(ctx, audit.Actor{Kind: audit.ActorSystem, ID: "bulkhead-serve"}, gcfg.Resource, nil); err != nil && !isConflict(err) {
		return fmt.Errorf("server: register gateway resource: %w", err)
	}
	rev := gateway.NewRevocations(s.logger)
	verifier := &gateway.Verifier{Audience: gcfg.Resource, Keys: s.token, Clock: s.clock}
	as := peer.Principal{ID: id, Kind: audit.ActorWorkload, Name: "gateway/" + gcfg.Name}
	gw, err := gateway.New(gcfg, gateway.Deps{Verifier: verifier, Revocations: rev, Decider: gateway.PDPDecider{PDP: s.policy},
		Audit: s.audit, Secrets: secretReveal{svc: s.secrets, as: as}, Tasks: taskSource{svc: s.elev, as: as},
		Budgets: s.db, Baselines: s.baselines(), Clock: s.clock, Logger: s.logger.With("component", "gateway"), ID: id})
	if err != nil {
		return err
	}
	// The gateway witnesses the log from the data directory, out of reach
	// of an intruder who has only the database.
	witness, err := audit.NewWitness(audit.WitnessConfig{Source: audit.LocalCheckpoints{Store: s.db}, Key: s.evidence.key.VerifierKey,
		File: filepath.Join(cred.dir, gateway.WitnessFile), Recorder: s.audit, Actor: audit.Actor{Kind: audit.ActorWorkload, ID: id.String()},
		Observer: s.metrics, Clock: s.clock, Logger: s.logger.With("component", "audit-witness")})
	if err != nil {
		return err
	}
	s.gateway = &inProcessGateway{gw: gw, verifier: verifier, cred: cred, rev: rev, witness: witness}
	return nil
}

func isConflict(err error) bool { return errors.Is(err, fault.Conflict) }

// retryDelay spaces reconnections of internal feeds.
const retryDelay = time.Second

// listenGateway binds the gateway's address and fixes the issuer it trusts.
func (s *Server) listenGateway() error {
	if s.gateway == nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.gateway.gw.Config().Listen)
	if err != nil {
		return fmt.Errorf("server: gateway listen on %s: %w", s.gateway.gw.Config().Listen, err)
	}
	s.gateway.listener = ln
	// Tokens name the control plane's issuer URL, known now; so does the
	// protected resource metadata.
	s.gateway.verifier.Issuer = s.token.Issuer()
	s.gateway.gw.SetAuthorizationServer(s.token.Issuer())
	return nil
}

// GatewayAddr is the in-process gateway's bound address, or "".
func (s *Server) GatewayAddr() string {
	if s.gateway == nil || s.gateway.listener == nil {
		return ""
	}
	return s.gateway.listener.Addr().String()
}

// gatewayComponents are the in-process gateway's long-running parts.
func (s *Server) gatewayComponents() []run.Component {
	g := s.gateway
	if g == nil {
		return nil
	}
	tlsCfg := gateway.TLSConfig(g.cred.getCertificate, peer.VerifyConnection(s.ca.X509Bundle(), s.clock))
	srv := g.gw.Server(tlsCfg)
	return []run.Component{
		run.Func("gateway-revocations", func(ctx context.Context) error {
			return g.rev.Feed(ctx, gateway.LogSource{Log: s.audit, Reader: s.db}, func(ctx context.Context) bool {
				select {
				case <-ctx.Done():
					return false
				case <-s.clock.After(retryDelay):
					return true
				}
			})
		}),
		run.Func("gateway", func(ctx context.Context) error {
			if err := g.gw.RecordStart(ctx); err != nil {
				// Evidence missing, not safety: every decision is still recorded first.
				s.logger.Error("the gateway's start is not on record; assessments will not see what it serves", "err", err)
			}
			return httpx.ServeTLSUntil(ctx, srv, g.listener)
		}),
		run.Func("gateway-credential", g.cred.refresh),
		run.Func("gateway-witness", g.witness.Run),
		run.Func("gateway-close", func(ctx context.Context) error { <-ctx.Done(); g.gw.Close(); return nil }),
	}
}
