package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// verifierFor resolves --key: a verifier key, a file holding one, or by
// default DATA-DIR/audit/log.pub on the server's host.
func (e *env) verifierFor(spec string) (note.Verifier, error) {
	if spec == "" {
		spec = filepath.Join(e.dataDir, "audit", audit.VerifierFile)
		if _, err := os.Stat(spec); err != nil {
			return nil, fmt.Errorf("no --key given and no %s: pass the log's verifier key (from 'bulkhead audit key', kept somewhere safe)", spec)
		}
	}
	return audit.ParseVerifier(spec)
}

func (e *env) auditVerifyCmd() *cobra.Command {
	var (
		saved            []string
		key, storeDSN    string
		archive          string
		remote, asJSON   bool
		progressDisabled bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the audit log from storage and check it against its signed checkpoints",
		Long: `Recompute the Merkle tree from the stored events and check it against
every signed checkpoint, naming the first bad entry if one was changed,
deleted, inserted or moved. Run it on the server's host as its operator:
it reads the store directly (--data-dir, --store), so a compromised
server process cannot show it a doctored log.

--checkpoint FILE (repeatable) also proves that today's log extends a
checkpoint saved earlier ('bulkhead audit checkpoint --out FILE'): nothing
that was signed then has been rewritten since. With --remote the proof
comes from the API instead (a consistency proof), for auditors without
access to the store. --archive FILE verifies a retention archive offline.

The newest checkpoint the server signed is also kept outside the database,
in DATA-DIR/audit/checkpoint.note; verify always checks the log extends it,
so a store that was emptied, replaced or truncated does not verify.

The verifier key comes from --key (a key or a file), by default
DATA-DIR/audit/log.pub. Exit status 2 means the log is not intact.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := e.verifierFor(key)
			if err != nil {
				return err
			}
			var notes [][]byte
			kept := filepath.Join(e.dataDir, "audit", audit.CheckpointFile)
			if _, err := os.Stat(kept); err == nil && archive == "" {
				// The checkpoint the server kept outside the database: a
				// store emptied, replaced or truncated since fails here.
				saved = append(saved, kept)
			}
			for _, f := range saved {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				notes = append(notes, b)
			}
			switch {
			case archive != "":
				return e.verifyArchive(archive, v, asJSON)
			case remote:
				return e.verifyRemote(cmd.Context(), v, notes, asJSON)
			}
			return e.verifyStore(cmd.Context(), storeDSN, v, notes, asJSON, !progressDisabled)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&saved, "checkpoint", nil, "a saved signed checkpoint the log must extend (repeatable)")
	f.StringVar(&key, "key", "", "the log's verifier key, or a file holding it (default DATA-DIR/audit/log.pub)")
	f.StringVar(&storeDSN, "store", "", "store: empty for SQLite in the data directory, or postgres://...")
	f.StringVar(&archive, "archive", "", "verify this retention archive instead of the store")
	f.BoolVar(&remote, "remote", false, "check --checkpoint files by consistency proofs from the API instead of the store")
	f.BoolVar(&progressDisabled, "no-progress", false, "no progress bar")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (e *env) verifyStore(ctx context.Context, dsn string, v note.Verifier, saved [][]byte, asJSON, showProgress bool) error {
	if dsn == "" {
		// store.Open would create an empty database; an empty log
		// verifying is not the answer to "is my log intact?".
		if _, err := os.Stat(filepath.Join(e.dataDir, "bulkhead.db")); err != nil {
			return fmt.Errorf("no store in %s: pass --data-dir or --store", e.dataDir)
		}
	}
	db, err := store.Open(ctx, dsn, e.dataDir, e.logger, store.AuditReader())
	if err != nil {
		return err
	}
	defer db.Close()
	bar := newProgress(e.stderr, "verifying", showProgress)
	rep, err := audit.Verify(ctx, db, audit.VerifyOptions{Verifier: v, Saved: saved, Progress: bar.update})
	bar.finish()
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		if asJSON {
			_ = printJSON(e.stdout, map[string]any{"ok": false, "first_bad_index": ve.Index, "upto": ve.Upto, "reason": ve.Reason})
		}
		return exitError{code: exitTampered, err: err}
	}
	if err != nil {
		return err
	}
	if rep.Size == 0 {
		fmt.Fprintf(e.stderr, "warning: the log is empty, but it has a signing key (%s): if this control plane has run before, this is not its database\n",
			filepath.Join(e.dataDir, "audit"))
	}
	if asJSON {
		return printJSON(e.stdout, map[string]any{"ok": true, "report": rep})
	}
	fmt.Fprintf(e.stdout, "ok: %d entries verified (%d rehashed, %d pruned and checked by hash) against %d signed checkpoint(s)\n",
		rep.Size, rep.Checked, rep.Pruned, rep.Checkpoints)
	if rep.Size > 0 {
		fmt.Fprintf(e.stdout, "latest checkpoint: %s size %d root %s\n", rep.Latest.Origin, rep.Latest.Size, rep.Latest.Root)
	}
	if rep.Unsigned > 0 {
		fmt.Fprintf(e.stdout, "%d newer entries are not signed yet; they match the hashes stored when they were appended\n", rep.Unsigned)
	}
	for _, cp := range rep.Saved {
		fmt.Fprintf(e.stdout, "extends saved checkpoint: size %d root %s\n", cp.Size, cp.Root)
	}
	return nil
}

func (e *env) verifyRemote(ctx context.Context, v note.Verifier, saved [][]byte, asJSON bool) error {
	c, err := e.operator()
	if err != nil {
		return err
	}
	msg, err := apiGet(ctx, c, e.server, "/v1/audit/checkpoint", nil)
	if err != nil {
		return err
	}
	latest, err := audit.OpenCheckpoint(msg, v)
	if err != nil {
		return exitError{code: exitTampered, err: fmt.Errorf("the server's latest checkpoint: %w", err)}
	}
	type result struct {
		Saved audit.Checkpoint `json:"saved"`
		OK    bool             `json:"ok"`
	}
	var results []result
	for _, b := range saved {
		old, err := audit.OpenCheckpoint(b, v)
		if err != nil {
			return fmt.Errorf("saved checkpoint: %w", err)
		}
		if old.Size > latest.Size {
			return exitError{code: exitTampered, err: fmt.Errorf("the log now signs %d entries, fewer than the %d of the saved checkpoint", latest.Size, old.Size)}
		}
		var p audit.ConsistencyProof
		q := url.Values{"old": {strconv.FormatInt(old.Size, 10)}, "new": {strconv.FormatInt(latest.Size, 10)}}
		if err := apiGetJSON(ctx, c, e.server, "/v1/audit/proof/consistency", q, &p); err != nil {
			return err
		}
		if err := tlog.CheckTree(p.Proof, latest.Size, latest.Root, old.Size, old.Root); err != nil {
			return exitError{code: exitTampered, err: fmt.Errorf("the log does not extend the saved checkpoint of size %d: %w", old.Size, err)}
		}
		results = append(results, result{Saved: old, OK: true})
	}
	if asJSON {
		return printJSON(e.stdout, map[string]any{"ok": true, "latest": latest, "checked": results})
	}
	fmt.Fprintf(e.stdout, "latest checkpoint verifies: %s size %d root %s\n", latest.Origin, latest.Size, latest.Root)
	for _, r := range results {
		fmt.Fprintf(e.stdout, "consistency proof ok: the log extends the saved checkpoint of size %d\n", r.Saved.Size)
	}
	return nil
}

func (e *env) verifyArchive(path string, v note.Verifier, asJSON bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sum, err := audit.VerifyArchive(f, v)
	if err != nil {
		return exitError{code: exitTampered, err: err}
	}
	if asJSON {
		return printJSON(e.stdout, sum)
	}
	fmt.Fprintf(e.stdout, "ok: archive holds entries [%d, %d), each proven in the checkpoint of size %d; sha256 %s\n",
		sum.From, sum.Before, sum.Checkpoint.Size, sum.SHA256)
	return nil
}

// progress draws a progress bar on a terminal for runs that take more
// than a second; elsewhere (a pipe, a test) it stays silent.
type progress struct {
	w       io.Writer
	label   string
	on      bool
	start   time.Time
	last    time.Time
	printed bool
}

func newProgress(w io.Writer, label string, enabled bool) *progress {
	on := false
	if f, ok := w.(*os.File); ok && enabled {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progress{w: w, label: label, on: on, start: time.Now()}
}

func (p *progress) update(done, total int64) {
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.start) < time.Second || now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last, p.printed = now, true
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	const width = 30
	bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
	rate := float64(done) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %d/%d entries, %.0f/s ", p.label, bar, 100*frac, done, total, rate)
}

func (p *progress) finish() {
	if p.printed {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
