-- One-time join tokens for Bulkhead components (gateways): a gateway on
-- another machine enrolls with one, generating its key there, instead of
-- holding an operator credential. Like join_tokens, only the SHA-256 of the
-- secret is kept; spiffe_id is the identity the token enrolls.
CREATE TABLE component_join_tokens (
    hash       TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    used_at    BIGINT
);
