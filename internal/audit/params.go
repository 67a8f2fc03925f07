package audit

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Parsers of the audit API's query parameters: outside input, so each is
// strict (unknown parameters are refused, numbers are bounded) and fuzzed.

// Search limits.
const (
	DefaultSearchLimit = 100
	MaxSearchLimit     = 10000
)

// ProofParams are the parameters of the proof and archive endpoints. A
// zero Size, New or Before means "the latest signed checkpoint".
type ProofParams struct {
	Seq    int64 // inclusion: the entry
	Size   int64 // inclusion: the tree size to prove against
	Old    int64 // consistency: the older size
	New    int64 // consistency: the newer size
	From   int64 // archive: first entry
	Before int64 // archive: entries below this
}

// ParseProofParams parses the query of an inclusion ("seq", "size"),
// consistency ("old", "new") or archive ("from", "before") request; allowed
// names the parameters the endpoint takes and required those it needs.
func ParseProofParams(q url.Values, allowed, required []string) (ProofParams, error) {
	var p ProofParams
	fields := map[string]*int64{"seq": &p.Seq, "size": &p.Size, "old": &p.Old, "new": &p.New, "from": &p.From, "before": &p.Before}
	if err := onlyParams(q, allowed...); err != nil {
		return ProofParams{}, err
	}
	for _, name := range allowed {
		v, ok := q[name]
		if !ok {
			continue
		}
		n, err := parseIndex(name, v)
		if err != nil {
			return ProofParams{}, err
		}
		*fields[name] = n
	}
	for _, name := range required {
		if _, ok := q[name]; !ok {
			return ProofParams{}, fmt.Errorf("%w: parameter %q is required", fault.Invalid, name)
		}
	}
	return p, nil
}

func parseIndex(name string, v []string) (int64, error) {
	if len(v) != 1 {
		return 0, fmt.Errorf("%w: parameter %q must be given once", fault.Invalid, name)
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || n < 0 || len(v[0]) > 19 {
		return 0, fmt.Errorf("%w: parameter %q must be a non-negative integer", fault.Invalid, name)
	}
	return n, nil
}

func onlyParams(q url.Values, allowed ...string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: unknown parameter %q", fault.Invalid, k)
		}
	}
	return nil
}

// searchParams are the parameters GET /v1/audit/events takes.
var searchParams = []string{"after", "limit", "agent", "subject", "action", "decision", "decision_id", "since", "until", "newest"}

// ParseSearch parses a search query. agentID resolves an agent name to its
// SPIFFE ID ("agent=alpha"); "subject" takes any SPIFFE ID.
func ParseSearch(q url.Values, agentID func(string) (string, error)) (Query, error) {
	out := Query{AfterSeq: -1, Limit: DefaultSearchLimit}
	if err := onlyParams(q, searchParams...); err != nil {
		return Query{}, err
	}
	one := func(name string) (string, bool, error) {
		v, ok := q[name]
		if !ok {
			return "", false, nil
		}
		if len(v) != 1 || len(v[0]) > 1024 {
			return "", false, fmt.Errorf("%w: parameter %q must be given once, under 1 KiB", fault.Invalid, name)
		}
		return v[0], true, nil
	}
	if v, ok, err := one("after"); err != nil {
		return Query{}, err
	} else if ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			return Query{}, fmt.Errorf("%w: after must be a sequence number", fault.Invalid)
		}
		out.AfterSeq = n
	}
	if v, ok, err := one("limit"); err != nil {
		return Query{}, err
	} else if ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxSearchLimit {
			return Query{}, fmt.Errorf("%w: limit must be in [1, %d]", fault.Invalid, MaxSearchLimit)
		}
		out.Limit = n
	}
	agent, hasAgent, err := one("agent")
	if err != nil {
		return Query{}, err
	}
	subject, hasSubject, err := one("subject")
	if err != nil {
		return Query{}, err
	}
	switch {
	case hasAgent && hasSubject:
		return Query{}, fmt.Errorf("%w: give agent or subject, not both", fault.Invalid)
	case hasAgent:
		if agentID == nil {
			return Query{}, fmt.Errorf("%w: searching by agent name is not available", fault.Invalid)
		}
		id, err := agentID(agent)
		if err != nil {
			return Query{}, fmt.Errorf("%w: agent: %w", fault.Invalid, err)
		}
		out.Subject = id
	case hasSubject:
		if !strings.HasPrefix(subject, "spiffe://") {
			return Query{}, fmt.Errorf("%w: subject must be a SPIFFE ID", fault.Invalid)
		}
		out.Subject = subject
	}
	if v, ok, err := one("action"); err != nil {
		return Query{}, err
	} else if ok {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out.Actions = append(out.Actions, a)
			}
		}
		if len(out.Actions) > 32 {
			return Query{}, fmt.Errorf("%w: at most 32 actions", fault.Invalid)
		}
	}
	if v, ok, err := one("decision"); err != nil {
		return Query{}, err
	} else if ok {
		switch d := Decision(v); d {
		case Allow, Deny, Failed:
			out.Decision = d
		default:
			return Query{}, fmt.Errorf("%w: decision must be allow, deny or failed", fault.Invalid)
		}
	}
	if v, ok, err := one("decision_id"); err != nil {
		return Query{}, err
	} else if ok {
		out.DecisionID = v
	}
	for _, name := range []string{"since", "until"} {
		v, ok, err := one(name)
		if err != nil {
			return Query{}, err
		}
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return Query{}, fmt.Errorf("%w: %s must be an RFC 3339 time", fault.Invalid, name)
		}
		if name == "since" {
			out.Since = t.UTC()
		} else {
			out.Until = t.UTC()
		}
	}
	if v, ok, err := one("newest"); err != nil {
		return Query{}, err
	} else if ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Query{}, fmt.Errorf("%w: newest must be true or false", fault.Invalid)
		}
		out.Newest = b
	}
	return out, nil
}
