-- The audit log's Merkle tree (golang.org/x/mod/sumdb/tlog), its signed
-- checkpoints, and the cursors of the sinks that stream it out.

-- Every tlog stored hash, keyed by tlog.StoredHashIndex: the record hash of
-- each event and the interior nodes it completes. Written in the same
-- transaction as the events they cover, under the append lock.
CREATE TABLE audit_hashes (
    idx  BIGINT PRIMARY KEY,
    hash {{bytes}} NOT NULL
);

-- One row (id = 1): how many events the tree covers, and the retention
-- horizon below which event bodies were archived and deleted (their hashes
-- stay, so the tree still verifies). No row yet means the events written
-- before this migration have still to be hashed; the first append does it.
CREATE TABLE audit_tree (
    id            INTEGER PRIMARY KEY,
    size          BIGINT NOT NULL,
    pruned_before BIGINT NOT NULL
);

-- Signed checkpoints (C2SP signed notes), one per tree size.
CREATE TABLE audit_checkpoints (
    size      BIGINT PRIMARY KEY,
    issued_at BIGINT NOT NULL,
    note      {{bytes}} NOT NULL
);

-- How far each sink (a webhook) has delivered: seq of the last event the
-- receiver acknowledged. Only ever moves forward.
CREATE TABLE audit_cursors (
    name       TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Searches by agent match the actor or the target.
CREATE INDEX audit_events_target ON audit_events (target, time);
