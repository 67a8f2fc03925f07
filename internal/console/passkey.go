package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/peer"
)

// maxCeremonyBody bounds a browser's answer to a ceremony.
const maxCeremonyBody = 64 << 10

// human is an operator as a WebAuthn user: its handle is the SHA-256 of
// its SPIFFE ID, stable across its passkeys.
type human struct {
	id    string
	creds []webauthn.Credential
}

func (h human) WebAuthnID() []byte {
	sum := sha256.Sum256([]byte(h.id))
	return sum[:]
}
func (h human) WebAuthnName() string                       { return h.id }
func (h human) WebAuthnDisplayName() string                { return h.id[strings.LastIndex(h.id, "/")+1:] }
func (h human) WebAuthnCredentials() []webauthn.Credential { return h.creds }

func (c *Console) human(ctx context.Context, operator string) (human, error) {
	keys, err := c.cfg.Store.PasskeysOf(ctx, operator)
	if err != nil {
		return human{}, err
	}
	h := human{id: operator}
	for _, k := range keys {
		if !k.RevokedAt.IsZero() {
			continue
		}
		var cred webauthn.Credential
		if err := json.Unmarshal(k.Credential, &cred); err != nil {
			return human{}, fmt.Errorf("console: stored passkey: %w", err)
		}
		h.creds = append(h.creds, cred)
	}
	return h, nil
}

// ceremony is a registration or sign-in in progress, sealed in a cookie
// between its two requests.
type ceremony struct {
	Kind     string               `json:"kind"`
	Session  webauthn.SessionData `json:"session"`
	Operator string               `json:"op,omitempty"`
	Link     string               `json:"link,omitempty"`
	// Statement is what a decision's assertion confirms.
	Statement *statement `json:"statement,omitempty"`
	// Expires ends the ceremony whatever the cookie's own lifetime: a
	// sealed value kept past it opens, but is refused.
	Expires time.Time `json:"exp"`
}

func linkHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// spend marks a ceremony's challenge answered: a captured ceremony
// cookie and answer cannot be played again, here or on another replica.
func (c *Console) spend(ctx context.Context, cer ceremony) error {
	now := c.cfg.Clock.Now()
	if !now.Before(cer.Expires) {
		return fmt.Errorf("%w: the ceremony expired", fault.Unauthenticated)
	}
	sum := sha256.Sum256([]byte(cer.Kind + "\x00" + cer.Session.Challenge))
	err := c.cfg.Store.SpendChallenge(ctx, hex.EncodeToString(sum[:]), cer.Expires, now)
	if errors.Is(err, fault.Conflict) {
		return fmt.Errorf("%w: this ceremony was already answered", fault.Unauthenticated)
	}
	return err
}

// createLink makes a one-time link with which the calling operator
// registers a passkey in a browser.
func (c *Console) createLink(w http.ResponseWriter, r *http.Request) {
	p, _ := peer.FromContext(r.Context())
	token, err := randomToken()
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	now := c.cfg.Clock.Now()
	l := Link{Hash: linkHash(token), Operator: p.ID.String(), ExpiresAt: now.Add(LinkTTL), CreatedAt: now, CreatedBy: p.ID.String()}
	ev := audit.Event{Time: now, Actor: p.Actor(), Action: ActionPasskeyLink, Target: l.Operator,
		Detail: map[string]string{"link": "sha256:" + l.Hash, "expires_at": l.ExpiresAt.UTC().Format(time.RFC3339)}}
	if err := audit.Act(r.Context(), c.cfg.Audit, c.cfg.Logger, ev, func() error { return c.cfg.Store.CreatePasskeyLink(r.Context(), l) }); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	// The token rides in the fragment: browsers never send it to a server
	// or a Referer.
	httpx.WriteJSON(w, http.StatusCreated, api.PasskeyLink{URL: c.origin.String() + "/console/register#" + token, Operator: l.Operator, ExpiresAt: l.ExpiresAt.UTC()})
}

type linkRequest struct {
	Link string `json:"link"`
}

// registerBegin starts registering a passkey for the operator a link
// names.
func (c *Console) registerBegin(w http.ResponseWriter, r *http.Request) {
	var req linkRequest
	if err := httpx.DecodeJSON(w, r, 4<<10, &req); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	l, err := c.usableLink(r.Context(), req.Link)
	if err != nil {
		c.refuseCeremony(w, r, ActionPasskeyRegister, "", err)
		return
	}
	h, err := c.human(r.Context(), l.Operator)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	exclude := make([]protocol.CredentialDescriptor, 0, len(h.creds))
	for _, cr := range h.creds {
		exclude = append(exclude, cr.Descriptor())
	}
	creation, sess, err := c.wa.BeginRegistration(h,
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{ResidentKey: protocol.ResidentKeyRequirementRequired,
			UserVerification: protocol.VerificationRequired}),
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithExclusions(exclude))
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, fmt.Errorf("console: begin registration: %w", err))
		return
	}
	if err := c.setCookie(w, ceremonyCookie, ceremony{Kind: "register", Session: *sess, Operator: l.Operator, Link: l.Hash, Expires: c.cfg.Clock.Now().Add(ceremonyTTL)}, ceremonyTTL); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, creation)
}

func (c *Console) usableLink(ctx context.Context, token string) (Link, error) {
	if token == "" {
		return Link{}, fmt.Errorf("%w: no registration link", fault.Unauthenticated)
	}
	l, err := c.cfg.Store.PasskeyLink(ctx, linkHash(token))
	switch {
	case errors.Is(err, fault.NotFound):
		return Link{}, fmt.Errorf("%w: unknown registration link", fault.Unauthenticated)
	case err != nil:
		return Link{}, err
	case !l.UsedAt.IsZero():
		return Link{}, fmt.Errorf("%w: the registration link was already used", fault.Unauthenticated)
	case !c.cfg.Clock.Now().Before(l.ExpiresAt):
		return Link{}, fmt.Errorf("%w: the registration link expired", fault.Unauthenticated)
	}
	return l, nil
}

// takeCeremony reads, clears and spends the ceremony of this kind the
// browser answers, refusing (and recording, as action) anything else. A
// login ceremony names no operator yet.
func (c *Console) takeCeremony(w http.ResponseWriter, r *http.Request, kind, action, what string) (ceremony, bool) {
	var cer ceremony
	if err := c.cookie(r, ceremonyCookie, &cer); err != nil || cer.Kind != kind {
		c.refuseCeremony(w, r, action, "", fmt.Errorf("%w: no %s in progress", fault.Unauthenticated, what))
		return ceremony{}, false
	}
	clearCookie(w, ceremonyCookie)
	if err := c.spend(r.Context(), cer); err != nil {
		c.refuseCeremony(w, r, action, cer.Operator, err)
		return ceremony{}, false
	}
	return cer, true
}

// registerFinish checks the browser's new credential and stores it.
func (c *Console) registerFinish(w http.ResponseWriter, r *http.Request) {
	cer, ok := c.takeCeremony(w, r, "register", ActionPasskeyRegister, "registration")
	if !ok {
		return
	}
	h, err := c.human(r.Context(), cer.Operator)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxCeremonyBody)
	cred, err := c.wa.FinishRegistration(h, cer.Session, r)
	if err != nil {
		c.refuseCeremony(w, r, ActionPasskeyRegister, cer.Operator, fmt.Errorf("%w: %s", fault.Unauthenticated, describe(err)))
		return
	}
	if !cred.Flags.UserVerified {
		c.refuseCeremony(w, r, ActionPasskeyRegister, cer.Operator, fmt.Errorf("%w: the authenticator did not verify the user", fault.Unauthenticated))
		return
	}
	b, err := json.Marshal(cred)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	now := c.cfg.Clock.Now()
	ev := audit.Event{Time: now, Actor: audit.Actor{Kind: audit.ActorOperator, ID: cer.Operator}, Action: ActionPasskeyRegister, Target: cer.Operator,
		Detail: map[string]string{"passkey": base64.RawURLEncoding.EncodeToString(cred.ID), "link": "sha256:" + cer.Link, "aaguid": hex.EncodeToString(cred.Authenticator.AAGUID)}}
	err = audit.Act(r.Context(), c.cfg.Audit, c.cfg.Logger, ev, func() error {
		return c.cfg.Store.AddPasskey(r.Context(), Passkey{ID: cred.ID, Operator: cer.Operator, Credential: b, CreatedAt: now}, cer.Link, now)
	})
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"operator": cer.Operator})
}

// refuseCeremony records a refused registration or sign-in (action) and
// answers it; operator is whose it was, if known.
func (c *Console) refuseCeremony(w http.ResponseWriter, r *http.Request, action, operator string, why error) {
	who := audit.Actor{Kind: audit.ActorAnonymous}
	if operator != "" {
		who = audit.Actor{Kind: audit.ActorOperator, ID: operator}
	}
	c.refuseWith(w, r, audit.Event{Time: c.cfg.Clock.Now(), Actor: who, Action: action, Target: operator}, why)
}

// loginBegin starts a sign-in with any of the operators' passkeys (a
// discoverable credential: the authenticator says whose it is).
func (c *Console) loginBegin(w http.ResponseWriter, r *http.Request) {
	assertion, sess, err := c.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, fmt.Errorf("console: begin sign-in: %w", err))
		return
	}
	if err := c.setCookie(w, ceremonyCookie, ceremony{Kind: "login", Session: *sess, Expires: c.cfg.Clock.Now().Add(ceremonyTTL)}, ceremonyTTL); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, assertion)
}

// loginFinish checks the assertion and opens a session for its operator.
func (c *Console) loginFinish(w http.ResponseWriter, r *http.Request) {
	cer, ok := c.takeCeremony(w, r, "login", ActionSignIn, "sign-in")
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxCeremonyBody)
	var who string
	user, cred, err := c.wa.FinishPasskeyLogin(func(rawID, handle []byte) (webauthn.User, error) {
		k, err := c.cfg.Store.Passkey(r.Context(), rawID)
		if err != nil {
			return nil, err
		}
		who = k.Operator
		if !k.RevokedAt.IsZero() {
			return nil, errors.New("the passkey was revoked with its operator")
		}
		h, err := c.human(r.Context(), k.Operator)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(h.WebAuthnID(), handle) {
			return nil, errors.New("the passkey's user handle is not its operator's")
		}
		return h, nil
	}, cer.Session, r)
	if err != nil {
		c.refuseCeremony(w, r, ActionSignIn, who, fmt.Errorf("%w: %s", fault.Unauthenticated, describe(err)))
		return
	}
	h := user.(human)
	if !cred.Flags.UserVerified {
		c.refuseCeremony(w, r, ActionSignIn, h.id, fmt.Errorf("%w: the authenticator did not verify the user", fault.Unauthenticated))
		return
	}
	if cred.Authenticator.CloneWarning {
		c.refuseCeremony(w, r, ActionSignIn, h.id, fmt.Errorf("%w: the passkey's signature counter went back: a cloned authenticator?", fault.Unauthenticated))
		return
	}
	csrf, err := randomToken()
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	now := c.cfg.Clock.Now()
	s := session{Operator: h.id, Passkey: cred.ID, CSRF: csrf, Expires: now.Add(SessionTTL)}
	b, err := json.Marshal(cred)
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	ev := audit.Event{Time: now, Actor: s.actor(), Action: ActionSignIn, Target: h.id,
		Detail: map[string]string{"passkey": base64.RawURLEncoding.EncodeToString(cred.ID), "expires_at": s.Expires.UTC().Format(time.RFC3339)}}
	err = audit.Act(r.Context(), c.cfg.Audit, c.cfg.Logger, ev, func() error {
		// The sign count moves on: a cloned authenticator shows up.
		return c.cfg.Store.UsePasskey(r.Context(), cred.ID, b, cred.Authenticator.SignCount, now)
	})
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	if err := c.setCookie(w, sessionCookie, s, SessionTTL); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"operator": h.id})
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s session) {
	ev := audit.Event{Time: c.cfg.Clock.Now(), Actor: s.actor(), Action: ActionSignOut, Target: s.Operator}
	if err := audit.Act(r.Context(), c.cfg.Audit, c.cfg.Logger, ev, func() error { return nil }); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	clearCookie(w, sessionCookie)
	w.WriteHeader(http.StatusNoContent)
}

// describe is a WebAuthn error's detail, which says what failed.
func describe(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.DevInfo != "" {
		return pe.Details + ": " + pe.DevInfo
	}
	return err.Error()
}

// ActionPasskeyRevoke records the revocation of an operator's passkeys.
const ActionPasskeyRevoke = "console.passkey_revoke"

// RevokeOperator revokes every passkey of operator (a SPIFFE ID): an
// operator whose credentials are revoked signs in to the console no more,
// and its open sessions end at their next request.
func (c *Console) RevokeOperator(ctx context.Context, by audit.Actor, operator, reason string) error {
	ev := audit.Event{Time: c.cfg.Clock.Now(), Actor: by, Action: ActionPasskeyRevoke, Target: operator, Reasons: []string{reason}}
	return audit.Act(ctx, c.cfg.Audit, c.cfg.Logger, ev, func() error {
		_, err := c.cfg.Store.RevokePasskeys(ctx, operator, ev.Time)
		return err
	})
}

// listPasskeys lists the calling operator's passkeys.
func (c *Console) listPasskeys(w http.ResponseWriter, r *http.Request) {
	p, _ := peer.FromContext(r.Context())
	keys, err := c.cfg.Store.PasskeysOf(r.Context(), p.ID.String())
	if err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	out := make([]api.Passkey, 0, len(keys))
	for _, k := range keys {
		out = append(out, api.Passkey{ID: base64.RawURLEncoding.EncodeToString(k.ID), CreatedAt: k.CreatedAt.UTC(),
			LastUsedAt: k.LastUsedAt.UTC(), Revoked: !k.RevokedAt.IsZero()})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// revokeOwnPasskeys revokes the calling operator's passkeys (a lost or
// stolen authenticator); a new link registers another.
func (c *Console) revokeOwnPasskeys(w http.ResponseWriter, r *http.Request) {
	p, _ := peer.FromContext(r.Context())
	if err := c.RevokeOperator(r.Context(), p.Actor(), p.ID.String(), "revoked by its operator"); err != nil {
		httpx.WriteError(w, r, c.cfg.Logger, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
