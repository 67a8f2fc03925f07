package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// PostgreSQL notification channels. A notification is sent in the
// transaction that makes a change, so it is delivered at commit, once the
// change is visible; readers never depend on it (a missed one is caught by
// their next poll), it only makes them read at once.
const (
	// auditChannel: every audit append.
	auditChannel = "bulkhead_audit"
	// policyChannel: every change of what the PDP decides with.
	policyChannel = "bulkhead_policy"
)

// notify sends a notification on channel at commit (PostgreSQL only).
func (t *Tx) notify(ctx context.Context, channel string) error {
	if t.db.dialect != postgresDialect {
		return nil
	}
	if _, err := t.execPrepared(ctx, `SELECT pg_notify('`+channel+`', '')`); err != nil {
		return fmt.Errorf("store: notify %s: %w", channel, err)
	}
	return nil
}

// PolicyChanges signals after every committed change of policy versions,
// roles, the tool catalog or manifests, by any replica (PostgreSQL; on
// SQLite, audit.ErrNoFeed: the one replica reloads as it changes).
func (s *DB) PolicyChanges(ctx context.Context) (<-chan struct{}, error) {
	return s.listen(ctx, policyChannel)
}

var _ audit.Feed = (*DB)(nil)

// Changes implements audit.Feed: on PostgreSQL it LISTENs on a dedicated
// connection and signals after every audit commit by any replica. SQLite
// has one writer, whose own commits wake its followers: audit.ErrNoFeed.
func (s *DB) Changes(ctx context.Context) (<-chan struct{}, error) {
	return s.listen(ctx, auditChannel)
}

// listen LISTENs on channel on a dedicated connection until ctx ends or
// the connection breaks, when the channel closes.
func (s *DB) listen(ctx context.Context, channel string) (<-chan struct{}, error) {
	if s.dialect != postgresDialect {
		return nil, audit.ErrNoFeed
	}
	conn, err := s.sql.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: listen %s: %w", channel, err)
	}
	out := make(chan struct{}, 1)
	listening := make(chan error, 1)
	go func() {
		defer close(out)
		defer conn.Close()
		err := conn.Raw(func(dc any) error {
			pc := dc.(*stdlib.Conn).Conn()
			if _, err := pc.Exec(ctx, "LISTEN "+channel); err != nil {
				listening <- err
				return err
			}
			listening <- nil
			for {
				if _, err := pc.WaitForNotification(ctx); err != nil {
					// The context ended or the connection broke: the
					// connection is not reused with its LISTEN.
					pc.PgConn().Close(context.Background())
					return err
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		})
		select {
		case listening <- err: // Raw failed before listening
		default:
		}
	}()
	if err := <-listening; err != nil {
		return nil, fmt.Errorf("store: listen %s: %w", channel, err)
	}
	return out, nil
}
