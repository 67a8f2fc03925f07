package identity

import (
	"fmt"
	"regexp"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Agent and operator names become one SPIFFE path segment, so they use the
// segment's safe alphabet, start with a letter or digit, and stay short.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName checks an agent or operator name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", fault.Invalid, name)
	}
	return nil
}

func faultf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{fault.Invalid}, args...)...)
}
