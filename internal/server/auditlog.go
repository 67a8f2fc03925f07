package server

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/audit/ocsf"
	"github.com/bulkhead-dev/bulkhead/internal/audit/webhook"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
	"github.com/bulkhead-dev/bulkhead/internal/run"
)

// The evidence side of the audit log: the log's signing key, the
// checkpointer, the proof API and the optional webhook sink.

// AuditDir is where the log's checkpoint signing key lives.
func (c Config) AuditDir() string { return filepath.Join(c.DataDir, "audit") }

// AuditLogName is the log's origin and key name: one log per trust domain.
func (c Config) AuditLogName() string { return c.TrustDomain.Name() + "/audit" }

type evidence struct {
	key          audit.Key
	checkpointer *audit.Checkpointer
	api          *audit.API
	sink         *webhook.Sink
	alerts       *webhook.Sink
}

func (s *Server) buildEvidence(ctx context.Context) error {
	cfg := s.cfg
	var (
		key     audit.Key
		created bool
		err     error
	)
	if s.keys != nil {
		// The log's key in the CA's token too: made there, never on disk;
		// the one the store names, once it names one.
		var want ed25519.PublicKey
		stored, err := s.db.Meta(ctx, "audit_log_key")
		if err != nil {
			return err
		}
		if stored != "" {
			if want, err = audit.VerifierPublicKey(stored); err != nil {
				return err
			}
		}
		signer, serr := s.keys.Ed25519("audit", want)
		if serr != nil {
			return serr
		}
		key, created, err = audit.KeyFromSigner(cfg.AuditDir(), cfg.AuditLogName(), signer)
	} else {
		key, created, err = audit.LoadOrCreateKey(cfg.AuditDir(), cfg.AuditLogName())
	}
	if err != nil {
		return err
	}
	stored, err := s.db.SetMetaOnce(ctx, "audit_log_key", key.VerifierKey)
	if err != nil {
		return err
	}
	if stored != key.VerifierKey {
		// Replicas sign one log, so they share its key: copy DATA/audit.
		return fmt.Errorf("server: the store's audit log is signed by %s, but %s holds another key, %s; remove that directory to restore the log's key from the store", stored, cfg.AuditDir(), key.VerifierKey)
	}
	if created {
		s.logger.Info("created audit log signing key", "dir", cfg.AuditDir(), "verifier_key", key.VerifierKey)
	}
	ev := &s.evidence
	ev.key = key
	var publish func([]byte)
	if cfg.AuditWitnessURL != "" {
		if publish, err = s.checkpointPublisher(cfg.AuditWitnessURL); err != nil {
			return err
		}
	}
	ev.checkpointer, err = audit.NewCheckpointer(audit.CheckpointerConfig{Store: s.db, Key: key, Clock: s.clock, Publish: publish,
		Logger: s.logger, Log: s.audit, Every: cfg.AuditCheckpointEvery, Interval: cfg.AuditCheckpointInterval,
		File: filepath.Join(cfg.AuditDir(), audit.CheckpointFile)})
	if err != nil {
		return err
	}
	ev.api, err = audit.NewAPI(audit.APIConfig{Store: s.db, Log: s.audit, Key: key, Logger: s.logger,
		Actor: func(r *http.Request) (audit.Actor, bool) {
			p, ok := peer.FromContext(r.Context())
			return p.Actor(), ok
		},
		AgentID: func(name string) (string, error) {
			id, err := s.identity.AgentID(name)
			return id.String(), err
		}})
	if err != nil {
		return err
	}
	format, err := ocsf.ParseFormat(cfg.AuditWebhookFormat)
	if cfg.AuditWebhookFormat == "" {
		format, err = ocsf.FormatOCSF, nil
	}
	if err != nil {
		return fmt.Errorf("config: audit webhook: %w", err)
	}
	sink := func(url string, actions []string) (*webhook.Sink, error) {
		return webhook.New(webhook.Config{URL: url, Format: format, Store: s.db, Log: s.audit, Actions: actions,
			Clock: s.clock, Logger: s.logger, Mapper: ocsf.Mapper{LogName: cfg.AuditLogName()}})
	}
	if cfg.AuditWebhook != "" {
		if ev.sink, err = sink(cfg.AuditWebhook, nil); err != nil {
			return err
		}
		s.logger.Info("streaming the audit log", "sink", ev.sink.Name(), "format", format)
	}
	if cfg.AlertWebhook != "" {
		if ev.alerts, err = sink(cfg.AlertWebhook, []string{gateway.ActionAnomaly}); err != nil {
			return fmt.Errorf("config: alert webhook: %w", err)
		}
		s.logger.Info("sending anomaly alerts", "sink", ev.alerts.Name(), "format", format)
	}
	return nil
}

func (s *Server) evidenceRoutes(mux *http.ServeMux) {
	guard := s.identity.Guard(s.logger)
	s.evidence.api.Routes(mux, func(h http.Handler) http.Handler {
		return guard.Require(peer.Kinds(audit.ActorOperator), h)
	}, func(h http.Handler) http.Handler {
		// Gateways witness the log: they read its checkpoints and
		// consistency proofs, never its entries.
		return guard.Require(operatorsAndGateways, h)
	})
}

// operatorsAndGateways admits operators and Bulkhead gateways.
func operatorsAndGateways(p peer.Principal) error {
	if p.Kind == audit.ActorOperator {
		return nil
	}
	return gatewaysOnly(p)
}

// evidenceComponents sign checkpoints and deliver the webhook, each on
// one replica at a time: the log is one, whoever writes to it.
func (s *Server) evidenceComponents() []run.Component {
	cs := []run.Component{s.exclusive("audit-checkpoints", s.evidence.checkpointer.Run)}
	if s.evidence.sink != nil {
		cs = append(cs, s.exclusive("audit-webhook", s.evidence.sink.Run))
	}
	if s.evidence.alerts != nil {
		cs = append(cs, s.exclusive("alert-webhook", s.evidence.alerts.Run))
	}
	return cs
}

// Checkpointer signs the audit log (tests force checkpoints with it).
func (s *Server) Checkpointer() *audit.Checkpointer { return s.evidence.checkpointer }

// AuditKey is the audit log's signing key.
func (s *Server) AuditKey() audit.Key { return s.evidence.key }
