-- Privilege scoping (internal/elevation): task manifests, tasks, elevation
-- requests with their approvals and grants, and the approval policy set.

-- Every applied version of every manifest: the YAML as applied, what it
-- parsed to (spec, JSON), and the Cedar compiled from it. The latest
-- version of each name is that manifest's managed policy set, which every
-- PDP evaluates for the manifest's tasks; writing one increases
-- policy_state.generation in the same transaction.
CREATE TABLE manifests (
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    source     TEXT NOT NULL,
    policies   TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

-- status is open, completed, cancelled or expired. An open task past its
-- deadline is treated as expired by every check, before the sweep records
-- it. tainted is 0 or 1.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    agent            TEXT NOT NULL,
    manifest         TEXT NOT NULL,
    manifest_version BIGINT NOT NULL,
    description      TEXT NOT NULL,
    status           TEXT NOT NULL,
    tainted          BIGINT NOT NULL,
    tainted_at       BIGINT,
    taint_source     TEXT NOT NULL,
    opened_at        BIGINT NOT NULL,
    deadline         BIGINT NOT NULL,
    ended_at         BIGINT,
    ended_by         TEXT NOT NULL,
    end_reason       TEXT NOT NULL
);
CREATE INDEX tasks_status ON tasks (status, deadline);

-- An elevation is a request for a trigger of its task's manifest and, once
-- approved (status active), the grant in force until expires_at, for
-- max_uses calls (0: any number). No row is active unless its task is open:
-- ending a task ends its elevations in the same transaction.
CREATE TABLE elevations (
    id                 TEXT PRIMARY KEY,
    task               TEXT NOT NULL REFERENCES tasks(id),
    agent              TEXT NOT NULL,
    manifest           TEXT NOT NULL,
    trigger_name       TEXT NOT NULL,
    justification      TEXT NOT NULL,
    approval           TEXT NOT NULL,
    sensitivity        TEXT NOT NULL,
    tainted            BIGINT NOT NULL,
    status             TEXT NOT NULL,
    requested_at       BIGINT NOT NULL,
    request_expires_at BIGINT NOT NULL,
    granted_at         BIGINT,
    expires_at         BIGINT,
    max_uses           BIGINT NOT NULL,
    uses               BIGINT NOT NULL,
    ended_at           BIGINT,
    ended_by           TEXT NOT NULL,
    end_reason         TEXT NOT NULL
);
CREATE INDEX elevations_task ON elevations (task, status);
CREATE INDEX elevations_status ON elevations (status);

-- One approval per approver per elevation: two-person approval counts
-- distinct approvers.
CREATE TABLE elevation_approvals (
    elevation TEXT NOT NULL REFERENCES elevations(id),
    task      TEXT NOT NULL,
    approver  TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (elevation, approver)
);

-- Versions of the approval policy set; none means the default that ships
-- with Bulkhead. files is JSON, a list of name and content.
CREATE TABLE approval_policies (
    version    BIGINT PRIMARY KEY,
    digest     TEXT NOT NULL,
    files      {{bytes}} NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
