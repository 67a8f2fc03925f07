package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/mod/sumdb/note"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/audit/ocsf"
	"github.com/bulkhead-dev/bulkhead/internal/server"
)

// exitTampered is the exit code of a verification that found the log
// altered, so scripts can tell evidence of tampering from an I/O error.
const exitTampered = 2

// auditServeOptions are the audit flags of 'bulkhead serve'.
type auditServeOptions struct {
	every         int64
	interval      time.Duration
	webhook       string
	webhookFormat string
	alertWebhook  string
	witnessURL    string
}

func (o *auditServeOptions) flags(f *pflag.FlagSet) {
	f.Int64Var(&o.every, "audit-checkpoint-every", 0, "sign an audit checkpoint after this many events (default 10000)")
	f.DurationVar(&o.interval, "audit-checkpoint-interval", 0, "sign an audit checkpoint at least this often while the log grows (default 5s)")
	f.StringVar(&o.webhook, "audit-webhook", "", "stream every audit event to this URL (POSTed JSON lines, retried until acknowledged)")
	f.StringVar(&o.webhookFormat, "audit-webhook-format", "ocsf", "audit webhook line format: ocsf or json")
	f.StringVar(&o.alertWebhook, "alert-webhook", "", "send the gateways' anomaly records (OCSF Detection Findings) to this URL, retried until acknowledged")
	f.StringVar(&o.witnessURL, "audit-witness-url", "", "POST every newly signed audit checkpoint (a signed note) to this URL, a copy outside the database")
}

func (o auditServeOptions) apply(cfg *server.Config) {
	cfg.AuditCheckpointEvery, cfg.AuditCheckpointInterval = o.every, o.interval
	cfg.AuditWebhook, cfg.AuditWebhookFormat, cfg.AuditWitnessURL, cfg.AlertWebhook = o.webhook, o.webhookFormat, o.witnessURL, o.alertWebhook
}

func (e *env) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify, read and export the tamper-evident audit log",
		Long: `The audit log is an append-only Merkle log (the Go checksum database's
tree) with checkpoints signed by the log's own key. 'verify' recomputes it
from storage; the other commands read it through the API.`,
	}
	cmd.AddCommand(e.auditVerifyCmd(), e.auditCheckpointCmd(), e.auditKeyCmd(), e.auditTailCmd(),
		e.auditSearchCmd(), e.auditExportCmd(), e.auditArchiveCmd())
	return cmd
}

func (e *env) auditCheckpointCmd() *cobra.Command {
	var (
		out    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Print (or save) the latest signed checkpoint",
		Long: `Print the latest signed checkpoint, a C2SP signed note. Keep it somewhere
the server cannot write: 'bulkhead audit verify --checkpoint FILE' later
proves that the log still extends it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			msg, err := apiGet(cmd.Context(), c, e.server, "/v1/audit/checkpoint", nil)
			if err != nil {
				return err
			}
			if out != "" {
				if err := os.WriteFile(out, msg, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "saved checkpoint to %s\n", out)
			}
			if asJSON {
				// The CLI shows the text; 'verify' is what checks it.
				var un *note.UnverifiedNoteError
				if _, err := note.Open(msg, note.VerifierList()); errors.As(err, &un) {
					cp, err := audit.ParseCheckpoint([]byte(un.Note.Text))
					if err != nil {
						return err
					}
					return printJSON(e.stdout, map[string]any{"origin": cp.Origin, "size": cp.Size, "root": cp.Root, "note": string(msg)})
				}
				return errors.New("the server's checkpoint is not a signed note")
			}
			if out == "" {
				_, err = e.stdout.Write(msg)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "also save it to this file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) auditKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "key",
		Short: "Print the audit log's verifier key (pin it to verify checkpoints)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			b, err := apiGet(cmd.Context(), c, e.server, "/v1/audit/key", nil)
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(b)
			return err
		},
	}
}

// filterFlags are the search filters shared by tail, search and export.
type filterFlags struct {
	agent, subject, decision, since, until string
	decisionID                             string
	actions                                []string
}

func (ff *filterFlags) add(f *pflag.FlagSet) {
	f.StringVar(&ff.agent, "agent", "", "events by or about this agent (name)")
	f.StringVar(&ff.subject, "subject", "", "events by or about this SPIFFE ID")
	f.StringVar(&ff.decision, "decision", "", "allow, deny or failed")
	f.StringVar(&ff.decisionID, "decision-id", "", "the records of one decision: the id an agent is given when it is refused")
	f.StringSliceVar(&ff.actions, "action", nil, "only these actions (comma-separated or repeated)")
	f.StringVar(&ff.since, "since", "", "from this time: a duration ago (1h) or RFC 3339")
	f.StringVar(&ff.until, "until", "", "before this time: a duration ago or RFC 3339")
}

func (ff filterFlags) query(now time.Time) (url.Values, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("agent", ff.agent)
	set("subject", ff.subject)
	set("decision", ff.decision)
	set("decision_id", ff.decisionID)
	if len(ff.actions) > 0 {
		q.Set("action", strings.Join(ff.actions, ","))
	}
	for k, v := range map[string]string{"since": ff.since, "until": ff.until} {
		if v == "" {
			continue
		}
		t, err := parseWhen(v, now)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", k, err)
		}
		q.Set(k, t.Format(time.RFC3339Nano))
	}
	return q, nil
}

// parseWhen reads "1h" (that long ago), an RFC 3339 time or a date.
func parseWhen(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (1h) nor a time (RFC 3339 or YYYY-MM-DD)", v)
}

func (e *env) auditSearchCmd() *cobra.Command {
	var (
		ff     filterFlags
		limit  int
		after  int64
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "search",
		Short: "Search the audit log (e.g. --agent NAME --since 1h --decision deny)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.operator()
			if err != nil {
				return err
			}
			q, err := ff.query(time.Now())
			if err != nil {
				return err
			}
			q.Set("limit", strconv.Itoa(limit))
			q.Set("after", strconv.FormatInt(after, 10))
			var evs []audit.Event
			if err := apiGetJSON(cmd.Context(), c, e.server, "/v1/audit/events", q, &evs); err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, evs)
			}
			return eventTable(e.stdout, evs)
		},
	}
	ff.add(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", audit.DefaultSearchLimit, fmt.Sprintf("most events (up to %d)", audit.MaxSearchLimit))
	cmd.Flags().Int64Var(&after, "after", -1, "only events after this sequence number")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func eventTable(w io.Writer, evs []audit.Event) error {
	rows := make([][]string, 0, len(evs))
	for _, ev := range evs {
		rows = append(rows, []string{strconv.FormatInt(ev.Seq, 10), fmtTime(ev.Time), string(ev.Decision), ev.Action,
			ev.Actor.String(), ev.Target, ev.Detail["decision_id"], strings.Join(ev.Reasons, "; ")})
	}
	return table(w, []string{"SEQ", "TIME", "DECISION", "ACTION", "ACTOR", "TARGET", "DECISION ID", "REASONS"}, rows)
}

func eventLine(w io.Writer, ev audit.Event, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	line := fmt.Sprintf("%d %s %-6s %s %s", ev.Seq, fmtTime(ev.Time), ev.Decision, ev.Action, ev.Actor)
	if ev.Target != "" {
		line += " -> " + ev.Target
	}
	if len(ev.Reasons) > 0 {
		line += " (" + strings.Join(ev.Reasons, "; ") + ")"
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

func (e *env) auditTailCmd() *cobra.Command {
	var (
		ff             filterFlags
		n              int
		follow, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the latest audit events; -f follows new ones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := e.operator()
			if err != nil {
				return err
			}
			q, err := ff.query(time.Now())
			if err != nil {
				return err
			}
			q.Set("newest", "true")
			q.Set("limit", strconv.Itoa(n))
			var evs []audit.Event
			if n > 0 {
				if err := apiGetJSON(ctx, c, e.server, "/v1/audit/events", q, &evs); err != nil {
					return err
				}
			}
			last := int64(-1)
			for _, ev := range evs {
				if err := eventLine(e.stdout, ev, asJSON); err != nil {
					return err
				}
				last = ev.Seq
			}
			if !follow {
				return nil
			}
			if last < 0 {
				// Nothing matched yet: follow from the current end.
				var all []audit.Event
				if err := apiGetJSON(ctx, c, e.server, "/v1/audit/events", url.Values{"newest": {"true"}, "limit": {"1"}}, &all); err != nil {
					return err
				}
				if len(all) > 0 {
					last = all[0].Seq
				}
			}
			return e.follow(ctx, c, last, ff, asJSON)
		},
	}
	ff.add(cmd.Flags())
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "how many of the latest events")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	return cmd
}

// follow prints events after seq from the server's event stream until ctx
// ends, reconnecting from the last event seen, so nothing is skipped.
func (e *env) follow(ctx context.Context, c *client.Client, after int64, ff filterFlags, asJSON bool) error {
	match, err := ff.matcher(time.Now())
	if err != nil {
		return err
	}
	// The API client's timeout covers a whole response; a stream has none.
	hc := &http.Client{Transport: c.HTTPClient().Transport}
	for ctx.Err() == nil {
		q := url.Values{"after": {strconv.FormatInt(after, 10)}}
		if len(ff.actions) > 0 {
			q.Set("action", strings.Join(ff.actions, ","))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, firstServer(e.server)+"/v1/events?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = apiError(resp)
			resp.Body.Close()
			return err
		}
		if err == nil {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				var ev audit.Event
				if json.Unmarshal([]byte(data), &ev) != nil {
					continue
				}
				after = ev.Seq
				if match(ev) {
					if err := eventLine(e.stdout, ev, asJSON); err != nil {
						resp.Body.Close()
						return err
					}
				}
			}
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// matcher applies the filters the event stream does not.
func (ff filterFlags) matcher(now time.Time) (func(audit.Event) bool, error) {
	var since, until time.Time
	var err error
	if ff.since != "" {
		if since, err = parseWhen(ff.since, now); err != nil {
			return nil, err
		}
	}
	if ff.until != "" {
		if until, err = parseWhen(ff.until, now); err != nil {
			return nil, err
		}
	}
	return func(ev audit.Event) bool {
		if ff.agent != "" && !strings.HasSuffix(ev.Actor.ID, "/agent/"+ff.agent) && !strings.HasSuffix(ev.Target, "/agent/"+ff.agent) {
			return false
		}
		if ff.subject != "" && ev.Actor.ID != ff.subject && ev.Target != ff.subject {
			return false
		}
		if ff.decision != "" && string(ev.Decision) != ff.decision {
			return false
		}
		return (since.IsZero() || !ev.Time.Before(since)) && (until.IsZero() || ev.Time.Before(until))
	}, nil
}

func (e *env) auditExportCmd() *cobra.Command {
	var (
		ff     filterFlags
		format string
		out    string
		after  int64
	)
	cmd := &cobra.Command{
		Use:   "export --format ocsf|json",
		Short: "Export audit events as JSON lines for a SIEM (OCSF or plain JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			f, err := ocsf.ParseFormat(format)
			if err != nil {
				return err
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			q, err := ff.query(time.Now())
			if err != nil {
				return err
			}
			vkey, err := apiGet(ctx, c, e.server, "/v1/audit/key", nil)
			if err != nil {
				return err
			}
			name, _, _ := strings.Cut(strings.TrimSpace(string(vkey)), "+")
			m := ocsf.Mapper{LogName: name, ProductVersion: Version}
			w := e.stdout
			if out != "" {
				file, err := os.Create(out)
				if err != nil {
					return err
				}
				defer file.Close()
				w = file
			}
			bw := bufio.NewWriter(w)
			q.Set("limit", strconv.Itoa(audit.MaxSearchLimit))
			n := 0
			for {
				q.Set("after", strconv.FormatInt(after, 10))
				var evs []audit.Event
				if err := apiGetJSON(ctx, c, e.server, "/v1/audit/events", q, &evs); err != nil {
					return err
				}
				for _, ev := range evs {
					line, err := m.Line(f, ev)
					if err != nil {
						return err
					}
					bw.Write(line)
					bw.WriteByte('\n')
					after = ev.Seq
				}
				n += len(evs)
				if len(evs) < audit.MaxSearchLimit {
					break
				}
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(e.stderr, "exported %d events to %s\n", n, out)
			}
			return nil
		},
	}
	ff.add(cmd.Flags())
	cmd.Flags().StringVar(&format, "format", "ocsf", "ocsf (OCSF 1.7 events) or json (the audit events as stored)")
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of stdout")
	cmd.Flags().Int64Var(&after, "after", -1, "only events after this sequence number")
	return cmd
}

func (e *env) auditArchiveCmd() *cobra.Command {
	var (
		before    int64
		olderThan string
		out, key  string
		reason    string
		prune     bool
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "archive --before SEQ|--older-than DURATION --out FILE [--prune]",
		Short: "Archive old audit entries with inclusion proofs; --prune then deletes them from the store",
		Long: `Write the retained entries below --before (or older than --older-than) to
FILE, each with an inclusion proof against the latest signed checkpoint,
and verify the file. With --prune the entries' bodies are then deleted
from the store: an explicit, recorded action (audit.prune, with the
archive's SHA-256), allowed only for signed entries every webhook sink has
delivered. The tree's hashes stay, so 'audit verify' still covers the
whole log, and 'audit verify --archive FILE' proves the archive.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if out == "" {
				return errors.New("--out FILE is required")
			}
			if (before > 0) == (olderThan != "") {
				return errors.New("give exactly one of --before and --older-than")
			}
			v, err := e.verifierFor(key)
			if err != nil {
				return err
			}
			c, err := e.operator()
			if err != nil {
				return err
			}
			if olderThan != "" {
				cutoff, err := parseWhen(olderThan, time.Now())
				if err != nil {
					return fmt.Errorf("--older-than: %w", err)
				}
				var evs []audit.Event
				q := url.Values{"until": {cutoff.Format(time.RFC3339Nano)}, "newest": {"true"}, "limit": {"1"}}
				if err := apiGetJSON(ctx, c, e.server, "/v1/audit/events", q, &evs); err != nil {
					return err
				}
				if len(evs) == 0 {
					return fmt.Errorf("no retained entries are older than %s", cutoff.Format(time.RFC3339))
				}
				before = evs[0].Seq + 1
			}
			sum, err := e.downloadArchive(ctx, c, before, out, v)
			if err != nil {
				return err
			}
			result := map[string]any{"archive": out, "from": sum.From, "before": sum.Before, "sha256": sum.SHA256, "checkpoint_size": sum.Checkpoint.Size}
			if !asJSON {
				fmt.Fprintf(e.stdout, "archived entries [%d, %d) to %s (sha256 %s), proven against the checkpoint of size %d\n",
					sum.From, sum.Before, out, sum.SHA256, sum.Checkpoint.Size)
			}
			if prune && sum.Before > sum.From {
				var res audit.PruneResult
				err := apiPostJSON(ctx, c, e.server, "/v1/audit/prune",
					audit.PruneRequest{Before: sum.Before, ArchiveSHA256: sum.SHA256, Reason: reason}, &res)
				if err != nil {
					return err
				}
				result["pruned"], result["recorded_seq"] = res.Deleted, res.RecordedSeq
				if !asJSON {
					fmt.Fprintf(e.stdout, "pruned %d entries below %d; recorded as audit event %d\n", res.Deleted, res.Before, res.RecordedSeq)
				}
			}
			if asJSON {
				return printJSON(e.stdout, result)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&before, "before", 0, "archive entries below this sequence number")
	f.StringVar(&olderThan, "older-than", "", "archive entries older than this (a duration such as 2160h, or a time)")
	f.StringVar(&out, "out", "", "archive file to write")
	f.StringVar(&key, "key", "", "the log's verifier key, or a file holding it (default DATA-DIR/audit/log.pub)")
	f.BoolVar(&prune, "prune", false, "then delete the archived entries' bodies from the store (recorded)")
	f.StringVar(&reason, "reason", "", "why the entries are pruned (recorded)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// downloadArchive streams the archive to out and verifies the file: only
// an archive that proves every entry may justify a prune.
func (e *env) downloadArchive(ctx context.Context, c *client.Client, before int64, out string, v note.Verifier) (audit.ArchiveSummary, error) {
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return audit.ArchiveSummary{}, err
	}
	defer os.Remove(tmp) // no-op after the rename
	err = apiDo(ctx, c, e.server, http.MethodGet, "/v1/audit/archive", url.Values{"before": {strconv.FormatInt(before, 10)}}, nil,
		func(r io.Reader) error { _, err := io.Copy(f, r); return err })
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return audit.ArchiveSummary{}, err
	}
	rf, err := os.Open(tmp)
	if err != nil {
		return audit.ArchiveSummary{}, err
	}
	sum, err := audit.VerifyArchive(rf, v)
	rf.Close()
	if err != nil {
		return audit.ArchiveSummary{}, fmt.Errorf("the archive the server sent does not verify; nothing was pruned: %w", err)
	}
	return sum, os.Rename(tmp, out)
}

// HTTP helpers for the audit API: the typed client covers the identity
// API; these add the audit routes, whose wire types live in internal/audit.

func apiDo(ctx context.Context, c *client.Client, base, method, path string, q url.Values, body io.Reader, read func(io.Reader) error) error {
	// Built on the first replica; the client's transport sends it to
	// whichever answers.
	u := firstServer(base) + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Archives and exports can outlast the API client's timeout; the
	// context still bounds them.
	hc := &http.Client{Transport: c.HTTPClient().Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return apiError(resp)
	}
	return read(resp.Body)
}

func apiRequest(ctx context.Context, c *client.Client, base, method, path string, q url.Values, body io.Reader) ([]byte, error) {
	var out []byte
	err := apiDo(ctx, c, base, method, path, q, body, func(r io.Reader) error {
		var err error
		out, err = io.ReadAll(io.LimitReader(r, 256<<20))
		return err
	})
	return out, err
}

func apiGet(ctx context.Context, c *client.Client, base, path string, q url.Values) ([]byte, error) {
	return apiRequest(ctx, c, base, http.MethodGet, path, q, nil)
}

func apiGetJSON(ctx context.Context, c *client.Client, base, path string, q url.Values, out any) error {
	b, err := apiGet(ctx, c, base, path, q)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func apiPostJSON(ctx context.Context, c *client.Client, base, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := apiRequest(ctx, c, base, http.MethodPost, path, nil, bytes.NewReader(b))
	if err != nil {
		return err
	}
	return json.Unmarshal(resp, out)
}

func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Message == "" {
		e = api.Error{Code: "http_error", Message: strings.TrimSpace(string(b))}
	}
	return &client.Error{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
}
