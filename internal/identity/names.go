package identity

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Agent and operator names become one SPIFFE path segment, so they use the
// segment's safe alphabet, start with a letter or digit, and stay short.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName checks a top-level agent or operator name (one segment).
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", fault.Invalid, name)
	}
	return nil
}

// subSep joins a parent's name and a sub-agent's segment.
const subSep = "/sub/"

// maxAgentNameLen bounds a sub-agent path (depth is bounded separately).
const maxAgentNameLen = 512

// ValidateAgentName checks an agent name: a top-level name, or a sub-agent
// path NAME/sub/ID[/sub/ID...].
func ValidateAgentName(name string) error {
	if len(name) > maxAgentNameLen {
		return fmt.Errorf("%w: agent name is over %d characters", fault.Invalid, maxAgentNameLen)
	}
	for _, seg := range strings.Split(name, subSep) {
		if err := ValidateName(seg); err != nil {
			return err
		}
	}
	return nil
}

// Depth is an agent's delegation depth: 0 for a top-level agent, 1 for its
// sub-agent, and so on.
func Depth(name string) int { return strings.Count(name, subSep) }

// Ancestors returns a sub-agent's ancestors' names, nearest first.
func Ancestors(name string) []string {
	var out []string
	for {
		i := strings.LastIndex(name, subSep)
		if i < 0 {
			return out
		}
		name = name[:i]
		out = append(out, name)
	}
}

func randomSegment() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("identity: random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// scopeRE is RFC 6749's scope-token: printable ASCII but space, '"' and '\'.
var scopeRE = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`)

// ValidateScopes checks scope tokens.
func ValidateScopes(scopes []string) error {
	if len(scopes) > 64 {
		return fmt.Errorf("%w: at most 64 scopes", fault.Invalid)
	}
	for _, sc := range scopes {
		if !scopeRE.MatchString(sc) {
			return fmt.Errorf("%w: scope %q is not a valid scope token", fault.Invalid, sc)
		}
	}
	return nil
}

func faultf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{fault.Invalid}, args...)...)
}

// Root is the top-level agent of a delegation chain: NAME of
// NAME/sub/ID/sub/ID, and likewise for the SPIFFE IDs
// spiffe://TD/agent/NAME/sub/ID....
func Root(name string) string {
	if i := strings.Index(name, subSep); i >= 0 {
		return name[:i]
	}
	return name
}
