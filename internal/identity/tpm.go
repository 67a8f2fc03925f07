package identity

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/ca"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// Sealer seals values bound to a label; *secretbox.Box is one. Challenge
// sessions are sealed so that any replica can check an answer.
type Sealer interface {
	Seal(label string, plaintext []byte) ([]byte, error)
	Open(label string, sealed []byte) ([]byte, error)
}

const sessionLabel = "identity.tpm-session"

// TPMCaller is who runs an attested enrollment: the holder of a join token
// (a first enrollment) or an agent renewing over mTLS.
type TPMCaller struct {
	Token string
	Peer  *peer.Principal
}

// tpmSubject is the agent a caller enrolls, with the record to write and
// the session subject that binds a challenge to this caller.
type tpmSubject struct {
	agent   Agent
	id      spiffeid.ID
	ev      audit.Event
	subject string
	redeem  string
	oldKey  crypto.PublicKey
}

func (s *Service) tpmSubject(ctx context.Context, c TPMCaller, digest string) (tpmSubject, error) {
	if c.Peer == nil {
		ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAnonymous}, Action: audit.ActionSVIDIssue,
			Digests: map[string]string{"request": digest}, Detail: map[string]string{"via": "tpm"}}
		t, err := s.joinToken(ctx, &ev, c.Token)
		if err != nil {
			return tpmSubject{}, err
		}
		a, id, err := s.tokenAgent(ctx, &ev, t)
		if err != nil {
			return tpmSubject{}, err
		}
		return tpmSubject{agent: a, id: id, ev: ev, subject: "join:" + t.Hash, redeem: t.Hash}, nil
	}
	p := *c.Peer
	ev := audit.Event{Actor: p.Actor(), Action: audit.ActionSVIDRenew, Target: p.ID.String(),
		Digests: map[string]string{"request": digest},
		Detail:  map[string]string{"via": "tpm", "previous_serial": ca.SerialHex(p.Cert)}}
	if p.Kind != audit.ActorAgent {
		return tpmSubject{}, s.deny(ctx, ev, fmt.Errorf("%w: only agents renew with a TPM", fault.Forbidden))
	}
	a, err := s.renewingAgent(ctx, ev, p)
	if err != nil {
		return tpmSubject{}, err
	}
	return tpmSubject{agent: a, id: p.ID, ev: ev, subject: "cert:" + ca.SerialHex(p.Cert), oldKey: p.Cert.PublicKey}, nil
}

// pinFor is the EK pin the verifier checks: "" lets a trusted EK CA vouch.
func pinFor(a Agent) string {
	if a.EKPin == EKPinCA {
		return ""
	}
	return a.EKPin
}

// BeginTPM checks a TPM's endorsement key against the agent's pin and its
// attestation key's creation proof, and returns a challenge.
func (s *Service) BeginTPM(ctx context.Context, c TPMCaller, req api.TPMBeginRequest) (api.TPMChallenge, error) {
	sub, err := s.tpmSubject(ctx, c, digestJSON(req))
	if err != nil {
		return api.TPMChallenge{}, err
	}
	sub.ev.Detail["stage"] = "challenge"
	sub.ev.Detail["ek"] = attestation.EKHash(req.EKPublic)
	if s.sealer == nil {
		return api.TPMChallenge{}, s.deny(ctx, sub.ev, fmt.Errorf("%w: this control plane does not attest TPMs", fault.Unavailable))
	}
	if sub.agent.EKPin == "" {
		// An agent no operator tied to a TPM gains nothing from one: a
		// stolen software credential must not buy a "tpm" attestation
		// with the thief's own TPM.
		return api.TPMChallenge{}, s.deny(ctx, sub.ev, fmt.Errorf("%w: agent %q has no TPM registered (bulkhead agent tpm NAME EK)", fault.Forbidden, sub.agent.Name))
	}
	sess, ch, err := s.attest.Challenge(req, pinFor(sub.agent), sub.subject, s.clock.Now())
	if err != nil {
		return api.TPMChallenge{}, s.denyAttestation(ctx, sub.ev, err)
	}
	b, err := json.Marshal(sess)
	if err != nil {
		return api.TPMChallenge{}, err
	}
	sealed, err := s.sealer.Seal(sessionLabel, b)
	if err != nil {
		return api.TPMChallenge{}, fmt.Errorf("identity: seal TPM session: %w", err)
	}
	ch.Session = base64.RawURLEncoding.EncodeToString(sealed)
	return ch, nil
}

// FinishTPM checks the answer to a challenge from BeginTPM and issues an
// SVID for the TPM-resident key it proves, stating the attestation.
func (s *Service) FinishTPM(ctx context.Context, c TPMCaller, fin api.TPMFinishRequest) (Issued, error) {
	sub, err := s.tpmSubject(ctx, c, digestJSON(fin))
	if err != nil {
		return Issued{}, err
	}
	ev := sub.ev
	ev.Digests["csr"] = audit.Digest([]byte(fin.CSR))
	if s.sealer == nil {
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: this control plane does not attest TPMs", fault.Unavailable))
	}
	sess, err := s.openSession(fin.Session)
	if err != nil {
		return Issued{}, s.denyAttestation(ctx, ev, err)
	}
	ev.Detail["ek"] = sess.EK
	switch {
	case sub.agent.EKPin == "":
		return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: agent %q has no TPM registered", fault.Forbidden, sub.agent.Name))
	case sess.Subject != sub.subject:
		return Issued{}, s.denyAttestation(ctx, ev, fmt.Errorf("%w: the challenge was issued to another caller", attestation.ErrRefused))
	case pinFor(sub.agent) != "" && pinFor(sub.agent) != sess.EK:
		// The pin changed since the challenge.
		return Issued{}, s.denyAttestation(ctx, ev, fmt.Errorf("%w: endorsement key %s is not the one registered for this agent", attestation.ErrRefused, sess.EK))
	}
	key, err := s.attest.Verify(sess, fin, s.clock.Now())
	if err != nil {
		return Issued{}, s.denyAttestation(ctx, ev, err)
	}
	csr, err := s.checkCSR(ctx, ev, sub.id, []byte(fin.CSR), sub.oldKey)
	if err != nil {
		return Issued{}, err
	}
	if k, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(key) {
		return Issued{}, s.denyAttestation(ctx, ev, fmt.Errorf("%w: the CSR's key is not the key the TPM certified", attestation.ErrRefused))
	}
	claims := attestation.Claims{Protection: attestation.TPM, Method: sess.Method, EK: sess.EK}
	ev.Detail["attestation"] = claims.String()
	if sub.agent.EKPin == EKPinCA {
		// The first TPM a maker vouches for is the agent's from now on.
		if err := s.store.SetAgentEK(ctx, sub.agent.Name, EKPinCA, sess.EK, s.clock.Now()); err != nil {
			return Issued{}, s.deny(ctx, ev, fmt.Errorf("%w: pin the agent's TPM: %w", fault.Conflict, err))
		}
	}
	return s.sign(ctx, ev, ca.SVIDRequest{ID: sub.id, PublicKey: key, TTL: sub.agent.SVIDTTL, Attestation: claims}, sub.agent.Name, sub.redeem)
}

func (s *Service) openSession(v string) (attestation.Session, error) {
	sealed, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return attestation.Session{}, fmt.Errorf("%w: malformed session", attestation.ErrRefused)
	}
	b, err := s.sealer.Open(sessionLabel, sealed)
	if err != nil {
		return attestation.Session{}, fmt.Errorf("%w: the session was not issued here", attestation.ErrRefused)
	}
	var sess attestation.Session
	if err := json.Unmarshal(b, &sess); err != nil {
		return attestation.Session{}, fmt.Errorf("%w: session: %w", attestation.ErrRefused, err)
	}
	return sess, nil
}

// denyAttestation records a refused proof as the caller's failure.
func (s *Service) denyAttestation(ctx context.Context, ev audit.Event, err error) error {
	if errors.Is(err, attestation.ErrRefused) {
		err = fmt.Errorf("%w: %w", fault.Unauthenticated, err)
	}
	return s.deny(ctx, ev, err)
}

func digestJSON(v any) string {
	b, _ := json.Marshal(v)
	return audit.Digest(b)
}

// ActionAgentTPM records an operator setting the TPM an agent's key must
// live in.
const ActionAgentTPM = "agent.tpm"

// SetAgentTPM sets the TPM agent name's key must live in (see
// api.SetTPMRequest). From then on the agent enrolls and renews only with
// a proof from that TPM; a certificate it already holds lives out its
// (short) life. Replacing a pinned TPM revokes the agent's sub-agents,
// whose lineage came from the old one.
func (s *Service) SetAgentTPM(ctx context.Context, by audit.Actor, name, ek string) (Agent, error) {
	if ek != "" && ek != EKPinCA {
		pin, err := attestation.ParseEKPin(ek)
		if err != nil {
			return Agent{}, fmt.Errorf("%w: %w", fault.Invalid, err)
		}
		ek = pin
	}
	a, err := s.GetAgent(ctx, name)
	if err != nil {
		return Agent{}, err
	}
	if a.Parent != "" {
		return Agent{}, fmt.Errorf("%w: a sub-agent's key is attested through its parent", fault.Invalid)
	}
	now := s.clock.Now()
	err = s.act(ctx, audit.Event{Time: now, Actor: by, Action: ActionAgentTPM, Target: a.SPIFFEID,
		Detail: map[string]string{"ek": ek, "previous_ek": a.EKPin}},
		func() error { return s.store.SetAgentEK(ctx, name, a.EKPin, ek, now) })
	if err != nil {
		return Agent{}, err
	}
	s.cache.clear()
	previous := a.EKPin
	a.EKPin, a.UpdatedAt = ek, now
	if strings.HasPrefix(previous, "sha256:") && ek != previous {
		// The TPM the agent's sub-agents descend from is gone: so is their
		// lineage.
		if _, err := s.revokeTree(ctx, by, a, false, "the agent's TPM changed"); err != nil {
			return a, err
		}
	}
	return a, nil
}
