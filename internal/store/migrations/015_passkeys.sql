-- Operators' passkeys for the console, and the one-time links that
-- register them. Only a link's hash is stored.
CREATE TABLE passkey_links (
    hash       TEXT PRIMARY KEY,
    operator   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    used_at    BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE passkeys (
    id           {{bytes}} PRIMARY KEY,
    operator     TEXT NOT NULL,
    credential   {{bytes}} NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL DEFAULT 0,
    revoked_at   BIGINT NOT NULL DEFAULT 0,
    -- The authenticator's signature counter as last seen; it must grow
    -- with every use (0 for authenticators that keep none).
    sign_count   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX passkeys_operator ON passkeys (operator);
-- Ceremony challenges already answered, until they would have expired:
-- a captured ceremony cannot be answered twice, on any replica.
CREATE TABLE console_challenges (
    hash       TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
