-- Identity: agents, one-time join tokens, every issued certificate, and the
-- audit event stream that records who asked for each of them.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    spiffe_id   TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    svid_ttl_us BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE join_tokens (
    hash       TEXT PRIMARY KEY,
    agent      TEXT NOT NULL REFERENCES agents(name),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE certificates (
    serial         TEXT PRIMARY KEY,
    spiffe_id      TEXT NOT NULL,
    agent          TEXT,
    not_before     BIGINT NOT NULL,
    not_after      BIGINT NOT NULL,
    issued_at      BIGINT NOT NULL,
    issued_by      TEXT NOT NULL,
    der            {{bytes}} NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX certificates_agent ON certificates (agent);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

-- seq is the event's index in the log: contiguous from 0, assigned under a
-- lock by the writer. body is the canonical encoding; the other columns are
-- copies for searching.
CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    decision   TEXT NOT NULL,
    task       TEXT NOT NULL,
    body       {{bytes}} NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_actor ON audit_events (actor_id, time);
CREATE INDEX audit_events_action ON audit_events (action, seq);
