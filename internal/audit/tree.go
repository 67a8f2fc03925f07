package audit

import (
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"
)

// The log is a Merkle tree in the shape of the Go checksum database
// (golang.org/x/mod/sumdb/tlog, compatible with RFC 6962): event n is leaf n,
// its record hash is tlog.RecordHash of the event's canonical body, and the
// store keeps every tlog stored hash, keyed by tlog.StoredHashIndex. All
// hashing goes through tlog; this file only decides which stored hashes to
// keep in memory.

// StoredHash is one of the tree's stored hashes.
type StoredHash struct {
	Index int64 // tlog.StoredHashIndex(level, n)
	Hash  tlog.Hash
}

// FrontierIndexes returns the stored-hash indexes of the complete subtrees
// that make up a tree of size n, largest first. They are all that tlog reads
// to append record n or to compute the hash of the tree of size n.
func FrontierIndexes(n int64) []int64 {
	out := make([]int64, 0, bits.OnesCount64(uint64(n)))
	for level := 63; level >= 0; level-- {
		if n&(1<<level) != 0 {
			out = append(out, tlog.StoredHashIndex(level, n>>level-1))
		}
	}
	return out
}

// Frontier is the right edge of a tree: the hashes of its complete
// subtrees. It grows one record at a time in O(log n) memory and answers
// tlog's reads for the next append and for the tree hash, so that writers
// and verifiers never hold the whole tree.
type Frontier struct {
	size   int64
	hashes map[int64]tlog.Hash
}

var _ tlog.HashReader = (*Frontier)(nil)

// NewFrontier returns the frontier of a tree of size n, given the stored
// hashes at FrontierIndexes(n), in that order.
func NewFrontier(n int64, hashes []tlog.Hash) (*Frontier, error) {
	idx := FrontierIndexes(n)
	if len(hashes) != len(idx) {
		return nil, fmt.Errorf("audit: frontier of size %d needs %d hashes, got %d", n, len(idx), len(hashes))
	}
	f := &Frontier{size: n, hashes: make(map[int64]tlog.Hash, 64)}
	for i, x := range idx {
		f.hashes[x] = hashes[i]
	}
	return f, nil
}

// Size is the number of records in the tree.
func (f *Frontier) Size() int64 { return f.size }

// Clone returns a copy that can be extended without changing f.
func (f *Frontier) Clone() *Frontier {
	c := &Frontier{size: f.size, hashes: make(map[int64]tlog.Hash, len(f.hashes)+8)}
	for k, v := range f.hashes {
		c.hashes[k] = v
	}
	return c
}

// ReadHashes implements tlog.HashReader over the frontier.
func (f *Frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := f.hashes[x]
		if !ok {
			return nil, fmt.Errorf("audit: stored hash %d is not on the frontier of a tree of size %d", x, f.size)
		}
		out[i] = h
	}
	return out, nil
}

// AppendRecord adds a record with the given canonical body and returns the
// stored hashes it creates, starting at tlog.StoredHashIndex(0, n).
func (f *Frontier) AppendRecord(body []byte) ([]StoredHash, error) {
	return f.AppendHash(tlog.RecordHash(body))
}

// AppendHash adds a record by its record hash.
func (f *Frontier) AppendHash(leaf tlog.Hash) ([]StoredHash, error) {
	n := f.size
	hs, err := tlog.StoredHashesForRecordHash(n, leaf, f)
	if err != nil {
		return nil, err
	}
	first := tlog.StoredHashIndex(0, n)
	out := make([]StoredHash, len(hs))
	for i, h := range hs {
		out[i] = StoredHash{Index: first + int64(i), Hash: h}
	}
	// Leaf n completes one subtree per trailing one bit of n: the m left
	// siblings it merged with stop being subtree roots, and of the new
	// hashes only the top one (level m) is a root.
	m := len(hs) - 1
	for level := 0; level < m; level++ {
		delete(f.hashes, tlog.StoredHashIndex(level, n>>level-1))
	}
	f.hashes[first+int64(m)] = hs[m]
	f.size++
	return out, nil
}

// Root returns the tree hash.
func (f *Frontier) Root() (tlog.Hash, error) { return tlog.TreeHash(f.size, f) }
