package httpx

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// shutdownGrace bounds a graceful shutdown: requests in flight get this
// long to finish once the process stops.
const shutdownGrace = 5 * time.Second

// ServeTLSUntil serves srv on ln over TLS (srv.TLSConfig) until ctx ends,
// then shuts down: requests get shutdownGrace to finish, then whatever is
// still open is closed. A server that stops on its own returns its error;
// a stop by ctx returns nil.
func ServeTLSUntil(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			// Long-lived streams (event feeds, MCP streams) do not end on
			// their own: cut them; their clients resume elsewhere.
			_ = srv.Close()
		}
		<-errc
		return nil
	}
}
