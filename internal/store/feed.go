package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// auditChannel is the PostgreSQL notification channel every audit append
// notifies, so that every replica's followers read it at once.
const auditChannel = "bulkhead_audit"

var _ audit.Feed = (*DB)(nil)

// Changes implements audit.Feed: on PostgreSQL it LISTENs on a dedicated
// connection and signals after every audit commit by any replica. SQLite
// has one writer, whose own commits wake its followers: audit.ErrNoFeed.
func (s *DB) Changes(ctx context.Context) (<-chan struct{}, error) {
	if s.dialect != postgresDialect {
		return nil, audit.ErrNoFeed
	}
	conn, err := s.sql.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: audit feed: %w", err)
	}
	out := make(chan struct{}, 1)
	listening := make(chan error, 1)
	go func() {
		defer close(out)
		defer conn.Close()
		err := conn.Raw(func(dc any) error {
			pc := dc.(*stdlib.Conn).Conn()
			if _, err := pc.Exec(ctx, "LISTEN "+auditChannel); err != nil {
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
		return nil, fmt.Errorf("store: audit feed: listen: %w", err)
	}
	return out, nil
}
