package gateway

import (
	"bytes"
	"encoding/json"
	"io"
)

// redactedText replaces an injected secret echoed by an upstream.
var redactedText = []byte("[REDACTED]")

// secretForms are the byte strings of the injected secrets an upstream may
// echo: each as sent, and as it reads inside a JSON string when escaping
// changes it.
func (g *Gateway) secretForms() [][]byte {
	var out [][]byte
	for _, s := range g.secrets.known() {
		out = append(out, s)
		if q, err := json.Marshal(string(s)); err == nil && len(q) > 2 && !bytes.Equal(q[1:len(q)-1], s) {
			out = append(out, q[1:len(q)-1])
		}
	}
	return out
}

// redactAll replaces every secret form in b.
func redactAll(b []byte, forms [][]byte) []byte {
	for _, s := range forms {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, redactedText)
		}
	}
	return b
}

// redact replaces injected secrets in a whole message.
func (g *Gateway) redact(b []byte) []byte { return redactAll(b, g.secretForms()) }

// streamRedactor redacts a body that arrives in pieces: a secret split
// across two reads is still found, because the last len(longest)-1 bytes
// of each piece are held back until the next one (or the end) shows
// whether they begin a secret.
type streamRedactor struct {
	forms   [][]byte
	keep    int
	pending []byte
}

func newStreamRedactor(forms [][]byte) *streamRedactor {
	r := &streamRedactor{forms: forms}
	for _, f := range forms {
		r.keep = max(r.keep, len(f)-1)
	}
	return r
}

// write redacts chunk and returns what may be sent now.
func (r *streamRedactor) write(chunk []byte) []byte {
	if len(r.forms) == 0 {
		return chunk
	}
	buf := redactAll(append(r.pending, chunk...), r.forms)
	cut := max(len(buf)-r.keep, 0)
	out := append([]byte(nil), buf[:cut]...)
	r.pending = append(r.pending[:0], buf[cut:]...)
	return out
}

// flush returns what was held back, at the end of the body.
func (r *streamRedactor) flush() []byte {
	out := redactAll(r.pending, r.forms)
	r.pending = nil
	return out
}

// copyRedacted copies body to w piece by piece through a streamRedactor,
// calling sent with each piece written; it stops when sent returns false
// or either side fails.
func copyRedacted(w io.Writer, body io.Reader, forms [][]byte, sent func(n int) bool) {
	red := newStreamRedactor(forms)
	buf := make([]byte, 32<<10)
	fl, _ := w.(interface{ Flush() })
	emit := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return sent(len(b))
	}
	for {
		n, err := body.Read(buf)
		if n > 0 && !emit(red.write(buf[:n])) {
			return
		}
		if err != nil {
			emit(red.flush())
			return
		}
	}
}
