package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func (e *env) backupCmd() *cobra.Command {
	var out, storeDSN string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a consistent copy of the control plane's store, while it runs",
		Long: `Write a consistent copy of the store to FILE while the control plane runs:
for the embedded SQLite store an online snapshot (VACUUM INTO), for
PostgreSQL a pg_dump in its custom format (pg_dump must be installed).

Everything the control plane needs is inside except one file: the master
key. The CA's root, the audit log's key, the token signing keys and the
secrets are in the store sealed with DATA-DIR/master.key. Keep master.key
apart from the backups (someone holding both holds the CA). Run it on the
control plane's host (--data-dir, --store), like 'audit verify'.`,
		Example: `  bulkhead backup --out /backups/bulkhead-$(date +%F).db
  bulkhead backup --store postgres://bulkhead@db/bulkhead --out bulkhead.dump`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE is required")
			}
			if storeDSN == "" {
				if _, err := os.Stat(filepath.Join(e.dataDir, "bulkhead.db")); err != nil {
					return fmt.Errorf("no store in %s: pass --data-dir or --store", e.dataDir)
				}
			}
			db, err := store.Open(cmd.Context(), storeDSN, e.dataDir, e.logger, store.AuditReader())
			if err != nil {
				return err
			}
			defer db.Close()
			if v, err := db.Meta(cmd.Context(), "sealed_file:ca/root_key.pem"); err != nil || v == "" {
				return fmt.Errorf("this store does not hold its keys yet: start 'bulkhead serve' with this version once, then back up (%v)", err)
			}
			if err := db.Backup(cmd.Context(), storeDSN, out); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "backed up the %s store to %s\nits keys are inside, sealed with %s: keep that file apart from the backup\n",
				db.Dialect(), out, filepath.Join(e.dataDir, "master.key"))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (must not exist)")
	cmd.Flags().StringVar(&storeDSN, "store", "", "store: empty for SQLite in the data directory, or postgres://...")
	return cmd
}

func (e *env) restoreCmd() *cobra.Command {
	var from, storeDSN string
	cmd := &cobra.Command{
		Use:   "restore --from FILE",
		Short: "Put a backup in place of a lost store",
		Long: `Put a backup ('bulkhead backup') in place of the store: for SQLite as
DATA-DIR/bulkhead.db, for PostgreSQL with pg_restore into --store. The
target must be empty (restore never overwrites or merges a history), and
no control plane may be running on the data directory.

Then start 'bulkhead serve' with DATA-DIR/master.key in place: the CA's
root and the audit log's key are restored from the store if DATA-DIR lacks
them, and 'bulkhead audit verify' checks the restored log. Entries written
after the backup are gone: verify says so if DATA-DIR/audit/checkpoint.note
signs more than the backup holds (see docs/operations.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return fmt.Errorf("--from FILE is required")
			}
			unlock, err := server.LockDataDir(e.dataDir)
			if err != nil {
				return err
			}
			defer unlock()
			if err := store.Restore(cmd.Context(), storeDSN, e.dataDir, from); err != nil {
				return err
			}
			// The checkpoint kept outside the store may sign entries
			// written after the backup, which are gone: keep it as that
			// evidence, out of the way of the restored log's own.
			kept := filepath.Join(e.dataDir, "audit", audit.CheckpointFile)
			if _, err := os.Stat(kept); err == nil {
				aside := kept + ".before-restore"
				if err := os.Rename(kept, aside); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "the checkpoint kept before the restore is now %s: compare it with the restored log (docs/operations.md)\n", aside)
			}
			fmt.Fprintf(e.stdout, "restored %s; start 'bulkhead serve' with %s in place, then run 'bulkhead audit verify'\n",
				from, filepath.Join(e.dataDir, "master.key"))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the backup file")
	cmd.Flags().StringVar(&storeDSN, "store", "", "store: empty for SQLite in the data directory, or postgres://...")
	return cmd
}
