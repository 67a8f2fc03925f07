package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// A join token is "bhj1.<secret>.<root>": 32 random bytes and the SHA-256 of
// the CA root certificate, both base64url. The root fingerprint lets an
// enrolling agent authenticate the control plane before it has a trust
// bundle (like kubeadm's CA hash), so one string is all it needs. Only the
// secret's hash is stored.
const (
	joinTokenPrefix = "bhj1."
	joinSecretLen   = 32
	// MaxJoinTokenLen bounds what ParseJoinToken will look at.
	MaxJoinTokenLen = 256
)

var b64 = base64.RawURLEncoding

// JoinTokenString builds a token from its secret and the root fingerprint.
func JoinTokenString(secret []byte, rootSHA256 [32]byte) string {
	return joinTokenPrefix + b64.EncodeToString(secret) + "." + b64.EncodeToString(rootSHA256[:])
}

// NewJoinSecret returns a fresh random secret.
func NewJoinSecret() ([]byte, error) {
	b := make([]byte, joinSecretLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("identity: join token: %w", err)
	}
	return b, nil
}

// ParsedJoinToken is a syntactically valid join token.
type ParsedJoinToken struct {
	Secret     []byte
	RootSHA256 [32]byte
}

// Hash is the stored form of the token: hex SHA-256 of the secret.
func (t ParsedJoinToken) Hash() string { return hashSecret(t.Secret) }

func hashSecret(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

// ParseJoinToken checks a token's syntax. Errors wrap fault.Invalid and never
// echo the token.
func ParseJoinToken(s string) (ParsedJoinToken, error) {
	var t ParsedJoinToken
	if len(s) > MaxJoinTokenLen {
		return t, fmt.Errorf("%w: join token is too long", fault.Invalid)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), joinTokenPrefix)
	if !ok {
		return t, fmt.Errorf("%w: not a Bulkhead join token (want bhj1.…)", fault.Invalid)
	}
	secretPart, rootPart, ok := strings.Cut(rest, ".")
	if !ok {
		return t, fmt.Errorf("%w: join token is malformed", fault.Invalid)
	}
	secret, err := b64.DecodeString(secretPart)
	if err != nil || len(secret) != joinSecretLen {
		return t, fmt.Errorf("%w: join token secret is malformed", fault.Invalid)
	}
	root, err := b64.DecodeString(rootPart)
	if err != nil || len(root) != sha256.Size {
		return t, fmt.Errorf("%w: join token CA fingerprint is malformed", fault.Invalid)
	}
	t.Secret = secret
	copy(t.RootSHA256[:], root)
	// Reject non-canonical encodings so one secret has one spelling.
	if JoinTokenString(secret, t.RootSHA256) != strings.TrimSpace(s) {
		return ParsedJoinToken{}, fmt.Errorf("%w: join token is malformed", fault.Invalid)
	}
	return t, nil
}

// MatchesRoot reports whether the token pins the given root fingerprint.
func (t ParsedJoinToken) MatchesRoot(fp [32]byte) bool { return bytes.Equal(t.RootSHA256[:], fp[:]) }
