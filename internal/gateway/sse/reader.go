package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Reader reads events from a text/event-stream. It is not safe for
// concurrent use.
type Reader struct {
	br      *bufio.Reader
	max     int
	err     error // sticky: a broken stream stays broken
	started bool  // a line has been read (for the BOM check)
	line    []byte
}

// NewReader reads events from r. One event, counting the comments and unknown
// fields between its lines, is at most maxEventSize bytes; so is a block of
// comments. maxEventSize <= 0 means DefaultMaxEventSize.
func NewReader(r io.Reader, maxEventSize int) *Reader {
	if maxEventSize <= 0 {
		maxEventSize = DefaultMaxEventSize
	}
	return &Reader{br: bufio.NewReader(r), max: maxEventSize}
}

// Next returns the next event. It returns io.EOF when the stream ends
// between events, and an error wrapping ErrMalformed or ErrTooLarge (or the
// underlying read error) otherwise; after an error every call returns it.
func (r *Reader) Next() (Event, error) {
	if r.err != nil {
		return Event{}, r.err
	}
	ev, err := r.next()
	if err != nil {
		r.err = err
	}
	return ev, err
}

func (r *Reader) next() (Event, error) {
	var (
		ev      Event
		data    strings.Builder
		hasData bool
		pending bool // a field line was read since the last blank line
		budget  = r.max
	)
	for {
		line, err := r.readLine(&budget)
		if errors.Is(err, io.EOF) {
			if pending {
				return Event{}, fmt.Errorf("%w: stream ended inside an event: %w", ErrMalformed, io.ErrUnexpectedEOF)
			}
			return Event{}, io.EOF
		}
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			ev.Data = data.String()
			if pending && ev != (Event{}) {
				return ev, nil
			}
			// A block without an event (keepalives, say) does not count
			// against the next event: a quiet long-lived stream must not
			// run out of budget.
			ev, hasData, pending = Event{}, false, false
			data.Reset()
			budget = r.max
			continue
		}
		if line[0] == ':' {
			continue // comment
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return Event{}, fmt.Errorf("%w: line without a colon: %.40q", ErrMalformed, line)
		}
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(name) {
		case "event":
			ev.Type = string(value)
			err = checkToken("event", ev.Type)
		case "id":
			ev.ID = string(value)
			err = checkID(ev.ID)
		case "retry":
			ev.Retry = string(value)
			err = checkRetry(ev.Retry)
		case "data":
			err = checkDataLine(string(value))
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		default:
			continue // unknown fields are ignored, as WHATWG says
		}
		if err != nil {
			return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		pending = true
	}
}

// readLine returns the next line without its terminator, charging its
// length to budget. The line is only valid until the next call.
func (r *Reader) readLine(budget *int) ([]byte, error) {
	r.line = r.line[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.line)+len(chunk) > *budget {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, r.max)
		}
		r.line = append(r.line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(r.line) == 0 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("%w: stream ended inside a line: %w", ErrMalformed, io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("sse: reading: %w", err)
	}
	*budget -= len(r.line)
	line := r.line[:len(r.line)-1]
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, fmt.Errorf("%w: lone CR in a line", ErrMalformed)
	}
	if !r.started {
		r.started = true
		if bytes.HasPrefix(line, []byte("\uFEFF")) {
			return nil, fmt.Errorf("%w: byte order mark", ErrMalformed)
		}
	}
	return line, nil
}
