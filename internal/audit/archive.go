package audit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// An archive keeps old entries after their bodies leave the store, each
// with an inclusion proof against one signed checkpoint, so every archived
// entry stays provable on its own, forever, with nothing but the archive
// and the log's verifier key. It is JSON lines: an ArchiveHeader, then one
// ArchiveEntry per entry in order.

// ArchiveFormat names the archive format version.
const ArchiveFormat = "bulkhead-audit-archive/1"

// ArchiveHeader is the first line of an archive.
type ArchiveHeader struct {
	Format string `json:"format"`
	// Checkpoint is the signed note every proof in the archive is against.
	Checkpoint string `json:"checkpoint"`
	From       int64  `json:"from"`
	Before     int64  `json:"before"`
}

// ArchiveEntry is one archived entry.
type ArchiveEntry struct {
	Seq int64 `json:"seq"`
	// Body is the canonical event body exactly as it was hashed.
	Body  []byte      `json:"body"`
	Proof []tlog.Hash `json:"proof"`
}

// ArchiveStore is what WriteArchive reads.
type ArchiveStore interface {
	HashStore
	Reader
}

// WriteArchive writes entries [from, before) of s with inclusion proofs
// against the signed checkpoint msg (which must cover them).
func WriteArchive(ctx context.Context, w io.Writer, s ArchiveStore, msg []byte, cp Checkpoint, from, before int64) error {
	if from < 0 || from > before || before > cp.Size {
		return fmt.Errorf("audit: archive range [%d, %d) is not within the checkpoint's %d entries", from, before, cp.Size)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(ArchiveHeader{Format: ArchiveFormat, Checkpoint: string(msg), From: from, Before: before}); err != nil {
		return err
	}
	r := newCachedReader(ctx, s)
	for n := from; n < before; {
		rows, err := s.Events(ctx, Query{AfterSeq: n - 1, Limit: min(1024, int(before-n))})
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("audit: archive: entry %d is not in the store", n)
		}
		for _, row := range rows {
			if row.Seq != n {
				return fmt.Errorf("audit: archive: entry %d is not in the store", n)
			}
			proof, err := tlog.ProveRecord(cp.Size, n, r)
			if err != nil {
				return fmt.Errorf("audit: archive: prove entry %d: %w", n, err)
			}
			// Check before writing: an archive that does not verify must
			// never be the reason old entries are deleted.
			if err := tlog.CheckRecord(proof, cp.Size, cp.Root, n, tlog.RecordHash(row.Body)); err != nil {
				return fmt.Errorf("audit: archive: entry %d is not in the signed tree: %w", n, err)
			}
			if err := enc.Encode(ArchiveEntry{Seq: n, Body: row.Body, Proof: proof}); err != nil {
				return err
			}
			n++
		}
	}
	return bw.Flush()
}

// ArchiveSummary describes an archive that verified.
type ArchiveSummary struct {
	Checkpoint Checkpoint `json:"checkpoint"`
	From       int64      `json:"from"`
	Before     int64      `json:"before"`
	// SHA256 is the hex digest of the archive's bytes, the value recorded
	// when the entries are pruned.
	SHA256 string `json:"sha256"`
}

// maxArchiveLine bounds one line of an archive.
const maxArchiveLine = 4 << 20

// VerifyArchive reads an archive and checks the checkpoint's signature,
// that the entries run from From to Before without a gap, and every
// entry's inclusion proof.
func VerifyArchive(r io.Reader, v note.Verifier) (ArchiveSummary, error) {
	h := sha256.New()
	sc := bufio.NewScanner(io.TeeReader(r, h))
	sc.Buffer(make([]byte, 64<<10), maxArchiveLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return ArchiveSummary{}, fmt.Errorf("audit: archive: %w", err)
		}
		return ArchiveSummary{}, errors.New("audit: archive is empty")
	}
	var hdr ArchiveHeader
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr.Format != ArchiveFormat {
		return ArchiveSummary{}, fmt.Errorf("audit: archive: first line is not a %s header", ArchiveFormat)
	}
	cp, err := OpenCheckpoint([]byte(hdr.Checkpoint), v)
	if err != nil {
		return ArchiveSummary{}, fmt.Errorf("audit: archive: %w", err)
	}
	if hdr.From < 0 || hdr.From > hdr.Before || hdr.Before > cp.Size {
		return ArchiveSummary{}, fmt.Errorf("audit: archive: range [%d, %d) is not within the checkpoint's %d entries", hdr.From, hdr.Before, cp.Size)
	}
	n := hdr.From
	for sc.Scan() {
		var e ArchiveEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return ArchiveSummary{}, fmt.Errorf("audit: archive: entry after %d: %w", n-1, err)
		}
		if e.Seq != n || n >= hdr.Before {
			return ArchiveSummary{}, fmt.Errorf("audit: archive: entry %d where %d was expected", e.Seq, n)
		}
		if err := tlog.CheckRecord(e.Proof, cp.Size, cp.Root, e.Seq, tlog.RecordHash(e.Body)); err != nil {
			return ArchiveSummary{}, fmt.Errorf("audit: archive: entry %d does not verify: %w", e.Seq, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return ArchiveSummary{}, fmt.Errorf("audit: archive: %w", err)
	}
	if n != hdr.Before {
		return ArchiveSummary{}, fmt.Errorf("audit: archive ends at %d but its header promises entries up to %d", n, hdr.Before)
	}
	return ArchiveSummary{Checkpoint: cp, From: hdr.From, Before: hdr.Before, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// cachedReader reads stored hashes through a cache: consecutive inclusion
// proofs share most of their upper nodes.
type cachedReader struct {
	ctx context.Context
	s   HashStore
	m   map[int64]tlog.Hash
}

func newCachedReader(ctx context.Context, s HashStore) *cachedReader {
	return &cachedReader{ctx: ctx, s: s, m: make(map[int64]tlog.Hash)}
}

func (c *cachedReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	if len(c.m) > 1<<18 {
		clear(c.m)
	}
	var miss []int64
	for _, x := range indexes {
		if _, ok := c.m[x]; !ok {
			miss = append(miss, x)
		}
	}
	if len(miss) > 0 {
		hs, err := HashReader(c.ctx, c.s).ReadHashes(miss)
		if err != nil {
			return nil, err
		}
		for i, x := range miss {
			c.m[x] = hs[i]
		}
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = c.m[x]
	}
	return out, nil
}
