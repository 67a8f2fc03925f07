-- Agents' behavioural baselines, learned from the audit log: the learner's
-- state through event seq "through", so the next read replays only what
-- came after.
CREATE TABLE baselines (
    agent      TEXT PRIMARY KEY,
    through    BIGINT NOT NULL,
    state      {{bytes}} NOT NULL,
    updated_at BIGINT NOT NULL
);
