package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is the log's signed statement of its size and root hash. Its
// text is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the
// origin line, the tree size in decimal, the base64 root hash, each ending in
// a newline; it travels as a C2SP signed note (golang.org/x/mod/sumdb/note)
// signed by the log's own Ed25519 key, whose name is the origin.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// StoredCheckpoint is a signed checkpoint as the store keeps it.
type StoredCheckpoint struct {
	Size     int64
	IssuedAt time.Time
	Note     []byte // the signed note
}

// ErrBadCheckpoint is wrapped by every error about a malformed or
// wrongly signed checkpoint.
var ErrBadCheckpoint = errors.New("audit: bad checkpoint")

// maxCheckpointText bounds a checkpoint's text; real ones are ~100 bytes.
const maxCheckpointText = 4096

// Text returns the checkpoint body that is signed.
func (c Checkpoint) Text() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", c.Origin, c.Size, c.Root)
}

// ParseCheckpoint parses a checkpoint body. Extension lines after the root
// hash are allowed by the format and ignored.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	bad := func(why string) (Checkpoint, error) {
		return Checkpoint{}, fmt.Errorf("%w: %s", ErrBadCheckpoint, why)
	}
	if len(text) > maxCheckpointText {
		return bad("text is too long")
	}
	if !utf8.Valid(text) || len(text) == 0 || text[len(text)-1] != '\n' {
		return bad("text is not newline-terminated UTF-8")
	}
	lines := bytes.Split(text[:len(text)-1], []byte("\n"))
	if len(lines) < 3 {
		return bad("want origin, size and root hash lines")
	}
	origin, size, root := string(lines[0]), string(lines[1]), string(lines[2])
	if origin == "" || bytes.ContainsAny(lines[0], " \t\r") {
		return bad("origin line is empty or has spaces")
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != size {
		return bad("size line is not a decimal tree size")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(root)
	if err != nil || len(raw) != tlog.HashSize {
		return bad("root line is not a base64 SHA-256 hash")
	}
	c := Checkpoint{Origin: origin, Size: n}
	copy(c.Root[:], raw)
	return c, nil
}

// Sign returns the checkpoint as a signed note.
func (c Checkpoint) Sign(s note.Signer) ([]byte, error) {
	if s.Name() != c.Origin {
		return nil, fmt.Errorf("audit: signer %q cannot sign a checkpoint of %q", s.Name(), c.Origin)
	}
	msg, err := note.Sign(&note.Note{Text: string(c.Text())}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return msg, nil
}

// OpenCheckpoint verifies a signed checkpoint with v and parses it. The
// checkpoint's origin must be the key's name, so a checkpoint of another
// log signed by a key of the same name cannot pass.
func OpenCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	if v == nil {
		return Checkpoint{}, fmt.Errorf("%w: no verifier key", ErrBadCheckpoint)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: origin %q is not the key's log %q", ErrBadCheckpoint, c.Origin, v.Name())
	}
	return c, nil
}
