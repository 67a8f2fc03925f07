package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"
)

// Writer writes events to a text/event-stream, flushing after each one so
// the agent sees it at once. Its methods are safe for concurrent use, so a
// keepalive goroutine may share it with a Transform.
type Writer struct {
	mu    sync.Mutex
	w     io.Writer
	flush func() error
	buf   bytes.Buffer
}

// NewWriter writes to w. If w is an http.ResponseWriter (or wraps one, see
// http.ResponseController), has a Flush() error method (bufio.Writer), or
// is an http.Flusher, each write is flushed.
func NewWriter(w io.Writer) *Writer {
	sw := &Writer{w: w, flush: func() error { return nil }}
	switch f := w.(type) {
	case http.ResponseWriter:
		rc := http.NewResponseController(f)
		sw.flush = func() error {
			if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
				return err
			}
			return nil
		}
	case interface{ Flush() error }:
		sw.flush = f.Flush
	case http.Flusher:
		sw.flush = func() error { f.Flush(); return nil }
	}
	return sw
}

// WriteEvent writes ev and flushes. It refuses, with an error wrapping
// ErrInvalidEvent and before writing anything, an event that Validate
// rejects.
func (w *Writer) WriteEvent(ev Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	field := func(name, value string) {
		w.buf.WriteString(name)
		w.buf.WriteString(": ")
		w.buf.WriteString(value)
		w.buf.WriteByte('\n')
	}
	if ev.Type != "" {
		field("event", ev.Type)
	}
	if ev.ID != "" {
		field("id", ev.ID)
	}
	if ev.Retry != "" {
		field("retry", ev.Retry)
	}
	switch {
	case ev.Data != "":
		for line := range strings.SplitSeq(ev.Data, "\n") {
			field("data", line)
		}
	case ev.ID != "":
		// An id with empty data is a stream's "priming" event (MCP
		// 2025-11-25 resumability): the empty data line makes parsers that
		// dispatch only events with data deliver it, and its id with it.
		field("data", "")
	}
	w.buf.WriteByte('\n')
	return w.writeLocked()
}

// WriteComment writes a comment line (a keepalive, typically) and flushes.
// The text must be one line of UTF-8.
func (w *Writer) WriteComment(text string) error {
	if !utf8.ValidString(text) || strings.ContainsAny(text, "\r\n") {
		return fmt.Errorf("%w: comment is not one line of UTF-8", ErrInvalidEvent)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	w.buf.WriteByte(':')
	if text != "" {
		w.buf.WriteByte(' ')
		w.buf.WriteString(text)
	}
	// The blank line makes the comment a complete block, so a strict reader
	// never sees the stream end "inside" it.
	w.buf.WriteString("\n\n")
	return w.writeLocked()
}

func (w *Writer) writeLocked() error {
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return fmt.Errorf("sse: writing: %w", err)
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("sse: flushing: %w", err)
	}
	return nil
}

// Transform copies events from src to dst, one at a time, through fn: fn
// returns the event to write and whether to keep it. An event is never
// written before fn has returned for it, and nothing more is written after
// the first error, so a rewriting fn that fails leaves the stream cut rather
// than unfiltered. Transform returns nil when src ends cleanly between
// events, and otherwise the first error from reading, fn, or writing (fn's
// error is returned as is). maxEventSize bounds each event read, as in
// NewReader. dst is flushed after each event, as in NewWriter. fn may end
// the stream after one last event by returning it with keep and an error
// wrapping ErrStop: that event is written, then the error returned.
func Transform(dst io.Writer, src io.Reader, maxEventSize int, fn func(Event) (Event, bool, error)) error {
	r := NewReader(src, maxEventSize)
	w := NewWriter(dst)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		out, keep, ferr := fn(ev)
		if ferr != nil && !errors.Is(ferr, ErrStop) {
			return ferr
		}
		if keep {
			if err := w.WriteEvent(out); err != nil {
				return err
			}
		}
		if ferr != nil {
			return ferr
		}
	}
}
