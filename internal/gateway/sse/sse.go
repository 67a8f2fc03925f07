// Package sse reads and writes Server-Sent Events one event at a time, so
// the gateway can inspect and rewrite an MCP response that arrives as
// text/event-stream (filter a tools/list result, say) without buffering the
// whole stream.
//
// The format is the WHATWG one
// (https://html.spec.whatwg.org/multipage/server-sent-events.html), narrowed
// wherever common parsers disagree, so that an event the gateway inspected
// means the same thing to the agent's parser once re-written:
//
//   - lines end in LF or CRLF; a lone CR is rejected (WHATWG ends a line
//     there, the MCP Go SDK does not);
//   - a line without a colon is rejected (WHATWG reads a field with an empty
//     value, the MCP Go SDK fails);
//   - after the one optional space that follows the colon, event, id and retry
//     values must not start or end with whitespace, and data lines must not
//     start or end with whitespace other than space and tab (some parsers
//     trim, some do not);
//   - id must not contain NUL, retry is 1 to 10 ASCII digits;
//   - the stream is UTF-8 without a byte order mark;
//   - the stream must not end inside an event or a line.
//
// Comments and unknown fields are skipped by Reader and so never forwarded by
// Transform. An empty id field is treated as absent.
package sse

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxEventSize bounds what Reader reads for one event when no limit is
// given.
const DefaultMaxEventSize = 8 << 20

// maxRetryDigits keeps retry within what every parser turns into a number.
const maxRetryDigits = 10

var (
	// ErrMalformed is wrapped by Reader errors for input that breaks the
	// format.
	ErrMalformed = errors.New("sse: malformed stream")
	// ErrTooLarge is wrapped by Reader errors when one event is over the
	// size limit.
	ErrTooLarge = errors.New("sse: event over size limit")
	// ErrInvalidEvent is wrapped by Writer and Validate errors for an event
	// that cannot be written unambiguously.
	ErrInvalidEvent = errors.New("sse: invalid event")
	// ErrStop, wrapped by an error of Transform's fn, ends the stream after
	// the event fn returned.
	ErrStop = errors.New("sse: stop")
)

// Event is one server-sent event. The zero Event is not an event: Reader
// never returns it and Writer refuses it.
type Event struct {
	// Type is the event field; "" means the default type, "message".
	Type string
	// ID is the id field; "" means absent.
	ID string
	// Data is the data field; lines are joined with "\n".
	Data string
	// Retry is the reconnection time in milliseconds, as ASCII digits; ""
	// means absent.
	Retry string
}

// IsMessage reports whether e has the default event type, the one MCP
// carries JSON-RPC messages in.
func (e Event) IsMessage() bool { return e.Type == "" || e.Type == "message" }

// Validate reports whether Writer can write e so that Reader (and the
// parsers this package narrows to) read back exactly e.
func (e Event) Validate() error {
	if e == (Event{}) {
		return fmt.Errorf("%w: empty event", ErrInvalidEvent)
	}
	if err := checkToken("event", e.Type); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if err := checkID(e.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if err := checkRetry(e.Retry); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if strings.IndexByte(e.Data, '\r') >= 0 {
		return fmt.Errorf("%w: data contains CR", ErrInvalidEvent)
	}
	for line := range strings.SplitSeq(e.Data, "\n") {
		if err := checkDataLine(line); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
		}
	}
	return nil
}

// checkToken checks an event, id or retry value.
func checkToken(field, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not UTF-8", field)
	}
	if strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("%s contains a line break", field)
	}
	if v == "" {
		return nil
	}
	first, _ := utf8.DecodeRuneInString(v)
	last, _ := utf8.DecodeLastRuneInString(v)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return fmt.Errorf("%s starts or ends with whitespace", field)
	}
	return nil
}

func checkID(v string) error {
	if err := checkToken("id", v); err != nil {
		return err
	}
	if strings.IndexByte(v, 0) >= 0 {
		// WHATWG ignores such an id, others keep it.
		return errors.New("id contains NUL")
	}
	return nil
}

func checkRetry(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxRetryDigits {
		return fmt.Errorf("retry has more than %d digits", maxRetryDigits)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return errors.New("retry is not ASCII digits")
		}
	}
	return nil
}

// checkDataLine checks one line of data (no line breaks in it).
func checkDataLine(v string) error {
	if !utf8.ValidString(v) {
		return errors.New("data is not UTF-8")
	}
	if v == "" {
		return nil
	}
	first, _ := utf8.DecodeRuneInString(v)
	last, _ := utf8.DecodeLastRuneInString(v)
	if ambiguousSpace(first) || ambiguousSpace(last) {
		return errors.New("data line starts or ends with whitespace other than space or tab")
	}
	return nil
}

// ambiguousSpace is whitespace that some parsers trim from data and JSON
// does not accept, so an inspector and the agent could read different JSON.
func ambiguousSpace(r rune) bool {
	return unicode.IsSpace(r) && r != ' ' && r != '\t'
}
