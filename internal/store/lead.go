package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/bulkhead-dev/bulkhead/internal/run"
)

var _ run.TryLead = (*DB)(nil).TryLead

// releaseTimeout bounds the unlock on Release; a connection that cannot
// unlock in time is dropped instead, which ends its session and its lock.
const releaseTimeout = 5 * time.Second

// TryLead implements run.TryLead.
//
// On PostgreSQL the lead is a session advisory lock held on a dedicated
// connection for as long as the lease lives. The lease is lost when that
// session ends (the backend is terminated, the connection breaks): the
// server has dropped the lock then, and another replica may take it. A
// silent network partition is noticed only when TCP keepalive gives up on
// the connection; the server keeps the lock at least as long, so two
// replicas never lead at once.
//
// SQLite has one process, so the lead is always granted and never lost.
func (s *DB) TryLead(ctx context.Context, name string) (run.Lease, error) {
	if s.dialect != postgresDialect {
		return soleLease{}, nil
	}
	conn, err := s.sql.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: lead %s: %w", name, err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, leadKey(name)).Scan(&ok); err != nil {
		// The lock may have been taken before the error: never pool a
		// connection that might hold it.
		discard(conn)
		return nil, fmt.Errorf("store: lead %s: %w", name, err)
	}
	if !ok {
		conn.Close()
		return nil, nil
	}
	return newPgLease(conn, name), nil
}

// leadKey is the advisory lock key of the job name: 64 bits of a hash, in
// a namespace of its own so that it does not meet other users' keys.
func leadKey(name string) int64 {
	sum := sha256.Sum256([]byte("bulkhead/lead/" + name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// discard closes conn's session rather than returning it to the pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// soleLease is the lead of the only process there is.
type soleLease struct{}

// Lost returns a nil channel, which is never ready.
func (soleLease) Lost() <-chan struct{} { return nil }
func (soleLease) Release()              {}

// pgLease holds an advisory lock on conn.
type pgLease struct {
	conn    *sql.Conn
	key     int64
	lost    chan struct{}
	stop    context.CancelFunc
	watched chan struct{} // closed when the watcher has given conn back
	once    sync.Once
}

func newPgLease(conn *sql.Conn, name string) *pgLease {
	ctx, stop := context.WithCancel(context.Background())
	l := &pgLease{conn: conn, key: leadKey(name), lost: make(chan struct{}), stop: stop, watched: make(chan struct{})}
	go l.watch(ctx)
	return l
}

// watch blocks on the idle connection until its session ends or Release
// stops it. No LISTEN is needed: the wait returns an error as soon as the
// server terminates the session or the connection breaks, without polling.
func (l *pgLease) watch(ctx context.Context) {
	defer close(l.watched)
	_ = l.conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn().PgConn()
		for {
			err := pc.WaitForNotification(ctx)
			switch {
			case ctx.Err() != nil:
				return nil // released; Release unlocks on the live connection
			case err != nil:
				cctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
				pc.Close(cctx)
				cancel()
				close(l.lost)
				return driver.ErrBadConn
			}
			// A notification on a connection that listens to nothing:
			// keep waiting.
		}
	})
}

func (l *pgLease) Lost() <-chan struct{} { return l.lost }

// Release unlocks and returns the connection to the pool, or drops the
// connection when the session is gone or the unlock fails.
func (l *pgLease) Release() {
	l.once.Do(func() {
		l.stop()
		<-l.watched
		select {
		case <-l.lost:
			l.conn.Close()
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		var unlocked bool
		err := l.conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, l.key).Scan(&unlocked)
		if err == nil && !unlocked {
			err = errors.New("lock not held")
		}
		if err != nil {
			discard(l.conn)
			return
		}
		l.conn.Close()
	})
}
