package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Error is a problem in a policy set, located in the file that has it.
type Error struct {
	File   string
	Line   int // 0 when the problem has no one place
	Column int
	Policy string // the policy's id, when the problem is in one policy
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Policy != "" {
		fmt.Fprintf(&b, "policy %q: ", e.Policy)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes every policy error a fault.Invalid: it is the caller's
// policy that is wrong.
func (e *Error) Unwrap() error { return fault.Invalid }

// Errors is every problem found in a policy set, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return fmt.Sprintf("policy set is invalid (%d error(s)); nothing was changed:\n%s", len(es), strings.Join(lines, "\n"))
}

// Unwrap makes Errors a fault.Invalid.
func (es Errors) Unwrap() error { return fault.Invalid }

// posRE finds "LINE:COLUMN" after a file name (or cedar-go's "<input>") in a
// parser's message.
var posRE = regexp.MustCompile(`(?:^|[\s(])(?:<input>|[^\s:]*):(\d+):(\d+):?\s*`)

// located turns a cedar-go parser error into an Error in file, keeping the
// line and column the parser reported.
func located(file string, err error) *Error {
	msg := err.Error()
	e := &Error{File: file}
	if m := posRE.FindStringSubmatchIndex(msg); m != nil {
		e.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		e.Column, _ = strconv.Atoi(msg[m[4]:m[5]])
		prefix := strings.TrimSpace(msg[:m[0]])
		prefix = strings.TrimSuffix(strings.TrimPrefix(prefix, "parser error: "), " at")
		rest := msg[m[1]:]
		// cedar-go quotes the token it stopped at; at the end of the
		// input that is "", which says nothing.
		if after, ok := strings.CutPrefix(rest, `"": `); ok {
			rest, prefix = after, prefix+" at end of input"
		}
		if prefix != "" {
			rest = prefix + ": " + rest
		}
		msg = rest
	}
	e.Msg = msg
	return e
}
