package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// Cookie names. The __Host- prefix makes the browser refuse them unless
// they are Secure, for the whole host and without a Domain: no subdomain
// can plant or read one.
const (
	sessionCookie  = "__Host-bulkhead-session"
	ceremonyCookie = "__Host-bulkhead-ceremony"
	csrfHeader     = "X-Bulkhead-CSRF"
)

// session is a signed-in human: an operator identity and the passkey it
// proved, until Expires.
type session struct {
	Operator string    `json:"op"`
	Passkey  []byte    `json:"pk"`
	CSRF     string    `json:"csrf"`
	Expires  time.Time `json:"exp"`
}

// actor is the audit actor of a session: the operator, signed in with a
// passkey.
func (s session) actor() audit.Actor { return audit.Actor{Kind: audit.ActorOperator, ID: s.Operator} }

// setCookie seals v into cookie name for ttl.
func (c *Console) setCookie(w http.ResponseWriter, name string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	sealed, err := c.cfg.Sealer.Seal(name, b)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: base64.RawURLEncoding.EncodeToString(sealed), Path: "/",
		MaxAge: int(ttl / time.Second), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return nil
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// cookie opens cookie name into v.
func (c *Console) cookie(r *http.Request, name string, v any) error {
	ck, err := r.Cookie(name)
	if err != nil {
		return err
	}
	sealed, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return err
	}
	b, err := c.cfg.Sealer.Open(name, sealed)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// current returns the request's live session: sealed here, unexpired,
// and its passkey still working (not revoked with its operator). A store
// error ends it too.
func (c *Console) current(r *http.Request) (session, bool) {
	var s session
	if err := c.cookie(r, sessionCookie, &s); err != nil || !c.cfg.Clock.Now().Before(s.Expires) || s.Operator == "" {
		return session{}, false
	}
	k, err := c.cfg.Store.Passkey(r.Context(), s.Passkey)
	if err != nil || !k.RevokedAt.IsZero() || k.Operator != s.Operator {
		return session{}, false
	}
	return s, true
}

type sessionKey struct{}

// signedIn serves next only within a live session and, the request being a
// change, with the session's CSRF token: a page of another origin cannot
// read the token, so cannot send it.
func (c *Console) signedIn(next func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.current(r)
		if !ok {
			c.refuse(r.Context(), r, audit.Actor{Kind: audit.ActorAnonymous}, "no session")
			httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "sign in with a passkey"})
			return
		}
		if got := r.Header.Get(csrfHeader); subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
			c.refuse(r.Context(), r, s.actor(), "missing or wrong CSRF token")
			httpx.WriteJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden: missing or wrong CSRF token"})
			return
		}
		next(w, r, s)
	}
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", errors.New("console: no randomness")
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
