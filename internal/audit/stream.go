package audit

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// streamBuffer is how far a stream subscriber may fall behind before it is
// cut off and must resume from the store.
const streamBuffer = 4096

// StreamHandler serves GET /v1/events as Server-Sent Events: first every
// stored event after the resume point (the Last-Event-ID header or the
// "after" query parameter), then a "caught-up" event (no id), then live
// events as they commit. "action"
// filters by a comma-separated list of actions. Each SSE id is the event's
// sequence number, so a client that reconnects misses nothing.
func StreamHandler(l *Log, r Reader, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		after := int64(-1)
		for _, v := range []string{req.Header.Get("Last-Event-ID"), req.URL.Query().Get("after")} {
			if v == "" {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < -1 {
				http.Error(w, "bad resume point", http.StatusBadRequest)
				return
			}
			after = n
			break
		}
		var actions []string
		if a := req.URL.Query().Get("action"); a != "" {
			actions = strings.Split(a, ",")
		}
		flusher, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming unsupported", http.StatusInternalServerError)
			return
		}
		// Subscribe before reading the backlog so nothing falls between.
		live, cancel := l.Subscribe(func(ev Event) bool {
			return len(actions) == 0 || slices.Contains(actions, ev.Action)
		}, streamBuffer)
		defer cancel()

		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		flusher.Flush() // the client sees the stream open before any event
		send := func(ev Event) error {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Action, b); err != nil {
				return err
			}
			flusher.Flush()
			after = ev.Seq
			return nil
		}
		for {
			rows, err := r.Events(req.Context(), Query{AfterSeq: after, Actions: actions, Limit: 1000})
			if err != nil {
				logger.Error("event stream: read backlog", "err", err)
				return
			}
			for _, row := range rows {
				ev, err := EventFromRow(row)
				if err != nil {
					logger.Error("event stream: decode", "err", err)
					return
				}
				if err := send(ev); err != nil {
					return
				}
			}
			if len(rows) < 1000 {
				break
			}
		}
		// Tell the client the backlog is complete: a gateway rebuilding its
		// revocation state from the log must not serve until it has it.
		if _, err := fmt.Fprintf(w, "event: caught-up\ndata: {\"seq\":%d}\n\n", after); err != nil {
			return
		}
		flusher.Flush()
		keepalive := time.NewTicker(15 * time.Second)
		defer keepalive.Stop()
		for {
			select {
			case <-req.Context().Done():
				return
			case <-keepalive.C:
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
					return
				}
				flusher.Flush()
			case ev, ok := <-live:
				if !ok {
					// Too far behind: end the stream; the client resumes
					// from its last id and reads the gap from the store.
					return
				}
				if ev.Seq <= after {
					continue
				}
				if err := send(ev); err != nil {
					return
				}
			}
		}
	})
}
