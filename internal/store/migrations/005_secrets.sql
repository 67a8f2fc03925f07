-- Upstream credentials that gateways inject (internal/secret), sealed with
-- the master key (internal/secretbox) and bound to name and version. A
-- deleted secret keeps its row with sealed NULL, so that a name set again
-- continues its version count and a version always names one value.

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    version    BIGINT NOT NULL,
    sealed     {{bytes}},
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
