package gateway

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// chunked reads its pieces one Read at a time, as a network body may.
type chunked struct{ pieces [][]byte }

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.pieces[0])
	if n < len(c.pieces[0]) {
		c.pieces[0] = c.pieces[0][n:]
	} else {
		c.pieces = c.pieces[1:]
	}
	return n, nil
}

// An upstream echoes the injected credential, and the read boundaries fall
// anywhere in it: split once at every offset of the body, and in three at
// every pair of offsets inside the secret. The agent never receives it, and
// everything else arrives unchanged.
func TestRedactionSplitsTheSecretAtEveryOffset(t *testing.T) {
	const secret = "s3cret-token-value"
	forms := [][]byte{[]byte(secret), []byte(`a\"quoted`)}
	body := []byte(`{"echo":"Bearer ` + secret + `","again":"` + secret + secret + `","q":"a\"quoted"}`)
	want := string(redactAll(append([]byte(nil), body...), forms))
	if strings.Contains(want, secret) || strings.Count(want, "[REDACTED]") != 4 {
		t.Fatalf("redactAll: %s", want)
	}
	check := func(t *testing.T, pieces ...[]byte) {
		var out bytes.Buffer
		sent := 0
		copyRedacted(&out, &chunked{pieces: pieces}, forms, func(n int) bool { sent += n; return true })
		if out.String() != want || sent != out.Len() {
			t.Fatalf("split %q: got %s (%d bytes charged)", pieces, out.String(), sent)
		}
	}
	for i := 0; i <= len(body); i++ {
		check(t, body[:i:i], body[i:])
	}
	start := bytes.Index(body, []byte(secret))
	for i := start; i < start+len(secret); i++ {
		for j := i + 1; j < start+len(secret); j++ {
			check(t, body[:i:i], body[i:j:j], body[j:])
		}
	}
	// One byte at a time.
	var pieces [][]byte
	for i := range body {
		pieces = append(pieces, body[i:i+1])
	}
	check(t, pieces...)
}

// The stream stops when the budget says so, with nothing after it.
func TestRedactedCopyStopsOnBudget(t *testing.T) {
	var out bytes.Buffer
	calls := 0
	copyRedacted(&out, &chunked{pieces: [][]byte{[]byte("aaaa"), []byte("bbbb"), []byte("cccc")}}, nil,
		func(int) bool { calls++; return calls < 2 })
	if out.String() != "aaaabbbb" {
		t.Fatalf("got %q", out.String())
	}
}

func TestSecretFormsIncludeTheJSONEscapedForm(t *testing.T) {
	g := &Gateway{secrets: &secretCache{vals: map[string]cachedSecret{"k": {v: []byte(`pa"ss\word`)}}}}
	forms := g.secretForms()
	if len(forms) != 2 || string(forms[1]) != `pa\"ss\\word` {
		t.Fatalf("forms %q", forms)
	}
}
