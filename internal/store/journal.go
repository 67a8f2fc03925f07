package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// The audit journal (SQLite only).
//
// An audit event is acknowledged — and the action it describes goes ahead —
// once it is durable. Committing it into SQLite costs a transaction that
// touches the events table, five indexes and the Merkle tree's hashes,
// fsynced (~0.4 ms on this project's test machine); a gateway pays it once
// per tool call. The journal makes an append cheap and keeps it durable:
// the batch is written to one append-only file and fdatasynced (~0.17 ms),
// then acknowledged; an ingester commits journaled events into the
// database in large batches, where the indexes and the tree are updated
// for many events at once.
//
// What the log promises is unchanged:
//   - every acknowledged event is on disk (the journal) before the caller
//     acts, and in the database before anything reads the log: audit
//     reads (search, verify, checkpoints, pruning) ingest first;
//   - the database never holds an effect whose record it lacks: every other
//     write transaction ingests the journal first, so a backup (a snapshot
//     of the database) that holds an issued certificate holds its record;
//   - after a crash, Open ingests what the journal holds beyond the
//     database, checks that what it already holds is the same, and refuses
//     to start if the database ends before the journal begins (events were
//     lost: a restored or replaced database), rather than start without
//     them.
//
// The journal lives beside the database (PATH.audit-journal) and is owned
// by one process at a time (flock): the one that appends. PostgreSQL has
// no journal: its replicas share the database, and a record on one
// replica's disk would not survive that replica.

// journalSuffix names the journal beside its database.
const journalSuffix = ".audit-journal"

const (
	// frameHeader is a frame's length (4 bytes), CRC-32C of what follows
	// the CRC (4) and sequence number (8), before the event's body.
	frameHeader = 16
	// maxJournalBody bounds a frame's body when reading: a length past it
	// is a torn or damaged frame, not an event.
	maxJournalBody = 16 << 20
	// ingestBatch bounds one ingest transaction.
	ingestBatch = 4096
	// highWater is the backlog past which appenders ingest themselves.
	highWater = 2 * ingestBatch
	// maxBacklog bounds the events waiting for the database: past it the
	// database is not keeping up (or fails), and appends are refused.
	maxBacklog = 1 << 16
	// truncateAt is the size past which a fully ingested journal is
	// emptied.
	truncateAt = 8 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type journal struct {
	db     *DB
	path   string
	f      *os.File
	logger *slog.Logger

	// appendMu serializes writes to the file; next, size and alloc are
	// its. alloc is how much of the file is zeroed and synced: an append
	// within it overwrites, and its fdatasync writes no metadata.
	appendMu sync.Mutex
	next     int64
	size     int64
	alloc    int64
	buf      []byte

	// mu guards the events waiting for the database and the journal's
	// health.
	mu      sync.Mutex
	pending []audit.Row
	// ingested is the sequence number of the first event not yet in the
	// database.
	ingested  int64
	ingestErr error
	// broken, once set, refuses every append: the file or the database
	// cannot be trusted to continue the log.
	broken error
	// drained is signalled (on mu) when an ingest ends.
	drained *sync.Cond

	closeOnce sync.Once
	closeErr  error

	// ingestMu serializes ingestion (the background ingester, readers and
	// writers catching up).
	ingestMu sync.Mutex

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// openJournal opens and locks the journal of the SQLite database at
// dbPath and ingests what it holds beyond the database. If another
// process holds it, held is true and the journal is nil.
func openJournal(ctx context.Context, s *DB, dbPath string) (j *journal, held bool, err error) {
	path := dbPath + journalSuffix
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("store: audit journal: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("store: audit journal: lock %s: %w", path, err)
	}
	j = &journal{db: s, path: path, f: f, logger: s.logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	j.drained = sync.NewCond(&j.mu)
	if err := j.recover(ctx); err != nil {
		f.Close()
		return nil, false, err
	}
	go j.run()
	return j, false, nil
}

// recover reads the journal, checks it against the database, ingests
// what the database lacks and empties the file.
func (j *journal) recover(ctx context.Context) error {
	// The file's name must survive a crash as its contents do.
	if err := syncDir(filepath.Dir(j.path)); err != nil {
		return fmt.Errorf("store: audit journal: %w", err)
	}
	data, err := io.ReadAll(j.f)
	if err != nil {
		return fmt.Errorf("store: audit journal: read %s: %w", j.path, err)
	}
	rows, valid := parseJournal(data)
	switch rest := data[valid:]; {
	case allZero(rest):
	case tornTail(rest):
		// A frame cut short by a crash was never acknowledged (the answer
		// waits for fdatasync).
		j.logger.Warn("audit journal: discarding an incomplete frame at its end", "file", j.path, "bytes", len(rest))
	default:
		// Damage with something after it: frames there may have been
		// acknowledged, and dropping them would lose them silently.
		return fmt.Errorf("store: the audit journal %s is damaged at byte %d, with data after it that may hold acknowledged events; move it aside only after checking it", j.path, valid)
	}
	end, pruned, err := j.db.auditEnd(ctx)
	if err != nil {
		return err
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].Seq != rows[i-1].Seq+1 {
			return fmt.Errorf("store: audit journal %s skips from event %d to %d; move it aside only after checking it", j.path, rows[i-1].Seq, rows[i].Seq)
		}
	}
	var tail []audit.Row
	for i, r := range rows {
		if r.Seq >= end {
			tail = rows[i:]
			break
		}
		if r.Seq < pruned {
			continue
		}
		var body []byte
		if err := j.db.queryRow(ctx, `SELECT body FROM audit_events WHERE seq = ?`, r.Seq).Scan(&body); err != nil {
			return fmt.Errorf("store: audit journal: event %d: %w", r.Seq, err)
		}
		if !bytes.Equal(body, r.Body) {
			return fmt.Errorf("store: audit journal %s and the database disagree on event %d: this journal belongs to another database; move it aside only after checking it", j.path, r.Seq)
		}
	}
	if len(tail) > 0 && tail[0].Seq != end {
		return fmt.Errorf("store: the audit journal %s holds events from %d, but the database's log ends at %d: events the control plane acknowledged are missing from the database (a restored or replaced database?). Restore the database that goes with this journal; start with this one only after moving the journal aside", j.path, tail[0].Seq, end)
	}
	j.next, j.ingested, j.pending = end+int64(len(tail)), end, tail
	if len(tail) > 0 {
		j.logger.Info("audit journal: ingesting events acknowledged before the last stop", "events", len(tail), "from", end)
	}
	if err := j.ingest(ctx, j.next); err != nil {
		return err
	}
	if err := j.truncate(true); err != nil {
		return err
	}
	return j.preallocate()
}

// parseJournal returns the journal's events and the length of its valid
// prefix: reading stops at the first frame that is cut short or whose
// checksum fails.
func parseJournal(data []byte) (rows []audit.Row, valid int) {
	for off := 0; len(data)-off >= frameHeader; {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n > maxJournalBody || len(data)-off-frameHeader < n {
			break
		}
		frame := data[off : off+frameHeader+n]
		if crc32.Checksum(frame[8:], crcTable) != binary.LittleEndian.Uint32(frame[4:]) {
			break
		}
		seq := int64(binary.LittleEndian.Uint64(frame[8:]))
		body := frame[frameHeader:]
		ev, err := audit.Decode(body)
		if err != nil || seq < 0 {
			break
		}
		ev.Seq = seq
		rows = append(rows, audit.RowOf(ev, bytes.Clone(body)))
		off += frameHeader + n
		valid = off
	}
	return rows, valid
}

// appendFrame encodes one journal frame.
func appendFrame(dst []byte, seq int64, body []byte) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(seq))
	dst = append(dst, body...)
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+8:], crcTable))
	return dst
}

// append makes rows durable in the journal and returns the first sequence
// number they were given.
func (j *journal) append(ctx context.Context, rows []audit.Row) (int64, error) {
	j.mu.Lock()
	// Appends that outrun the database wait for the ingester, so that a
	// sustained load slows down rather than fills the journal.
	for len(j.pending) >= highWater && j.ingestErr == nil && j.broken == nil {
		j.drained.Wait()
	}
	failing := j.ingestErr != nil
	j.mu.Unlock()
	if failing {
		// The database refused the log at the last ingest (a tampered
		// end, a full disk): nothing more is acknowledged until it takes
		// what waits.
		if err := j.ingest(ctx, 1<<62); err != nil {
			return 0, fmt.Errorf("store: audit journal: the database does not take the log: %w", err)
		}
	}
	j.appendMu.Lock()
	defer j.appendMu.Unlock()
	j.mu.Lock()
	broken, backlog := j.broken, len(j.pending)
	j.mu.Unlock()
	if broken != nil {
		return 0, broken
	}
	if backlog+len(rows) > maxBacklog {
		return 0, fmt.Errorf("store: audit journal: %d events wait for the database", backlog)
	}
	first := j.next
	j.buf = j.buf[:0]
	for i, r := range rows {
		j.buf = appendFrame(j.buf, first+int64(i), r.Body)
	}
	n, err := j.f.WriteAt(j.buf, j.size)
	if err == nil {
		err = datasync(j.f)
	}
	if err != nil {
		// What reached the file is unknown: appending after it could
		// put acknowledged events behind a damaged frame.
		err = fmt.Errorf("store: audit journal: write %s: %w; refusing to append until restart", j.path, err)
		j.mu.Lock()
		j.broken = err
		j.mu.Unlock()
		return 0, err
	}
	j.size += int64(n)
	j.next += int64(len(rows))
	j.mu.Lock()
	for i, r := range rows {
		r.Seq = first + int64(i)
		j.pending = append(j.pending, r)
	}
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return first, nil
}

// ingest commits journaled events into the database until every event
// below upto is there.
func (j *journal) ingest(ctx context.Context, upto int64) error {
	j.ingestMu.Lock()
	defer j.ingestMu.Unlock()
	for {
		j.mu.Lock()
		broken := j.broken
		n := min(len(j.pending), ingestBatch)
		if broken != nil || n == 0 || j.ingested >= upto {
			j.mu.Unlock()
			return broken
		}
		batch := j.pending[:n:n]
		j.mu.Unlock()
		_, err := j.db.appendEvents(ctx, batch, batch[0].Seq)
		j.mu.Lock()
		switch {
		case errors.Is(err, errLogMoved):
			// Rows deleted or added behind this process's back: the
			// database cannot take what was acknowledged where it was
			// acknowledged.
			err = fmt.Errorf("%w: it was changed behind the control plane's back (truncated, replaced or appended to by another process); run 'bulkhead audit verify'; appends are refused until restart", err)
			j.broken = err
		case err != nil && ctx.Err() == nil:
			// Until an ingest succeeds, appends are refused: the
			// database refuses the log (a tampered end, a full disk).
			j.ingestErr = err
		case err != nil:
			// The caller's context ended: not the database's refusal.
		default:
			j.pending = j.pending[n:]
			j.ingested += int64(n)
			j.ingestErr = nil
		}
		j.drained.Broadcast()
		j.mu.Unlock()
		if err != nil {
			select { // the ingester retries
			case j.wake <- struct{}{}:
			default:
			}
			return fmt.Errorf("store: audit journal: ingest: %w", err)
		}
	}
}

// backlog is how many acknowledged events wait for the database, and
// whether the database refuses them (or the journal is broken).
func (j *journal) backlog() (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return len(j.pending), j.broken
	}
	return len(j.pending), j.ingestErr
}

// sync returns once every event journaled before the call is in the
// database.
func (j *journal) sync(ctx context.Context) error {
	j.mu.Lock()
	upto, behind := j.ingested+int64(len(j.pending)), len(j.pending) > 0 || j.broken != nil
	j.mu.Unlock()
	if !behind {
		return nil
	}
	return j.ingest(ctx, upto)
}

// truncate empties the journal once everything in it is in the database
// and it has grown past truncateAt (or always, if force).
func (j *journal) truncate(force bool) error {
	j.appendMu.Lock()
	defer j.appendMu.Unlock()
	j.mu.Lock()
	idle := len(j.pending) == 0 && j.broken == nil
	j.mu.Unlock()
	if !idle || (!force && j.size < truncateAt) {
		return nil
	}
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("store: audit journal: truncate: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("store: audit journal: truncate: %w", err)
	}
	j.size, j.alloc = 0, 0
	return nil
}

// allocChunk is how much of the file preallocate zeroes at a time.
const allocChunk = 1 << 20

// preallocate zeroes the file ahead of the appends: on ext4 an
// fdatasync after an append that grows the file also commits the
// filesystem's journal (the new size and blocks), which waits for every
// other file's pending metadata; an overwrite's does not. Appends wait
// meanwhile (a few milliseconds per megabyte, done by the ingester).
func (j *journal) preallocate() error {
	j.appendMu.Lock()
	defer j.appendMu.Unlock()
	if j.alloc-j.size >= allocChunk/2 {
		return nil
	}
	from := max(j.alloc, j.size)
	if _, err := j.f.WriteAt(make([]byte, allocChunk), from); err != nil {
		return fmt.Errorf("store: audit journal: preallocate: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("store: audit journal: preallocate: %w", err)
	}
	j.alloc = from + allocChunk
	return nil
}

// tornTail says whether rest, what follows the journal's valid frames,
// is one frame cut short: appends write a whole frame at once over zeroed
// space, so a crash leaves at most one bad frame, then zeros (or the end
// of the file).
func tornTail(rest []byte) bool {
	if len(rest) < frameHeader {
		return true
	}
	n := int(binary.LittleEndian.Uint32(rest))
	if n > maxJournalBody {
		return false
	}
	return frameHeader+n >= len(rest) || allZero(rest[frameHeader+n:])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ingestRetry is how long the ingester waits after a failed ingest before
// trying again (a locked or full disk); appends carry on meanwhile, up to
// maxBacklog.
const ingestRetry = time.Second

// ingestEvery paces the background ingester. Ingesting as each append
// lands would put a database commit, and its fsync, beside every journal
// fdatasync on the same disk, which then waits for it; gathering makes one
// commit of many events a few times a second. Readers and other writers
// do not wait for it: they ingest what waits themselves (sync).
const ingestEvery = 50 * time.Millisecond

// gather waits ingestEvery, or less if a batch's worth waits already; false
// means the journal is closing.
func (j *journal) gather() bool {
	// Real time: a pace, not part of any outcome.
	t := time.NewTimer(ingestEvery)
	defer t.Stop()
	for {
		j.mu.Lock()
		full := len(j.pending) >= ingestBatch
		j.mu.Unlock()
		if full {
			return true
		}
		select {
		case <-j.stop:
			return false
		case <-t.C:
			return true
		case <-j.wake:
		}
	}
}

// run ingests in the background until close.
func (j *journal) run() {
	defer close(j.done)
	for {
		select {
		case <-j.stop:
			return
		case <-j.wake:
		}
		if !j.gather() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := j.ingest(ctx, 1<<62)
		cancel()
		if err == nil {
			err = j.truncate(false)
		}
		if err == nil {
			err = j.preallocate()
		}
		if err == nil {
			continue
		}
		j.logger.Error("audit journal: events wait for the database", "err", err)
		// Real time: a retry pace, not part of any outcome.
		t := time.NewTimer(ingestRetry)
		select {
		case <-j.stop:
			t.Stop()
			return
		case <-t.C:
		}
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

// close ingests what is left, empties the file and releases it. What
// cannot be ingested stays in the journal for the next Open.
func (j *journal) close() error {
	j.closeOnce.Do(func() {
		close(j.stop)
		<-j.done
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := j.ingest(ctx, 1<<62)
		if err == nil {
			err = j.truncate(true)
		}
		j.closeErr = errors.Join(err, j.f.Close())
	})
	return j.closeErr
}

// auditEnd returns the sequence number the log's next event gets in the
// database and the retention horizon.
func (s *DB) auditEnd(ctx context.Context) (end, pruned int64, err error) {
	err = s.queryRow(ctx, `SELECT size, pruned_before FROM audit_tree WHERE id = 1`).Scan(&end, &pruned)
	if errors.Is(err, sql.ErrNoRows) {
		// No tree yet: the first append hashes what is there (hashBacklog).
		var last sql.NullInt64
		if err := s.queryRow(ctx, `SELECT MAX(seq) FROM audit_events`).Scan(&last); err != nil {
			return 0, 0, fmt.Errorf("store: read audit log end: %w", err)
		}
		if last.Valid {
			return last.Int64 + 1, 0, nil
		}
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("store: read audit log end: %w", err)
	}
	return end, pruned, nil
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
