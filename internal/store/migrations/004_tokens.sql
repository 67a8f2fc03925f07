-- Service auth: agents' allowed OAuth scopes and sub-agent delegation,
-- certificate thumbprints for cnf-bound tokens, registered resources,
-- token signing keys (sealed), revoked token ids, and used client
-- assertion ids (replay protection for private_key_jwt).

ALTER TABLE agents ADD COLUMN parent TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN delegated_jti TEXT NOT NULL DEFAULT '';
CREATE INDEX agents_parent ON agents (parent);
CREATE INDEX agents_delegated_jti ON agents (delegated_jti);

ALTER TABLE certificates ADD COLUMN x5t_s256 TEXT NOT NULL DEFAULT '';
CREATE INDEX certificates_x5t ON certificates (x5t_s256);

CREATE TABLE oauth_resources (
    uri        TEXT PRIMARY KEY,
    scopes     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_by TEXT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);

-- active_at is unique so that two replicas rotating at once agree on one
-- key per slot.
CREATE TABLE token_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    private_sealed {{bytes}} NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    active_at      BIGINT NOT NULL UNIQUE
);

CREATE TABLE client_assertions (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
