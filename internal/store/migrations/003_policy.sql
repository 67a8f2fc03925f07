-- Policy: numbered versions of policy sets, which versions are in force,
-- agents' roles, the tool catalog, and what shadow evaluation found.

-- files is the set as JSON, a list of name and content. Versions are
-- never changed or deleted, so a PDP may cache a compiled version forever.
CREATE TABLE policy_versions (
    version     BIGINT PRIMARY KEY,
    digest      TEXT NOT NULL,
    policies    BIGINT NOT NULL,
    shadow      BIGINT NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    files       {{bytes}} NOT NULL
);

-- One row (id = 1). live_version and shadow_version are 0 when none is in
-- force. generation increases with every change a PDP must load (policies,
-- roles, tools): replicas poll this one number.
CREATE TABLE policy_state (
    id             BIGINT PRIMARY KEY,
    live_version   BIGINT NOT NULL,
    shadow_version BIGINT NOT NULL,
    generation     BIGINT NOT NULL
);
INSERT INTO policy_state (id, live_version, shadow_version, generation) VALUES (1, 0, 0, 1);

CREATE TABLE agent_roles (
    agent      TEXT NOT NULL REFERENCES agents(name),
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (agent, role)
);
CREATE INDEX agent_roles_role ON agent_roles (role);

-- The tool catalog, replaced whole by each apply. group_names is a JSON
-- list. untrusted_output is 0 or 1.
CREATE TABLE tool_servers (
    name             TEXT PRIMARY KEY,
    description      TEXT NOT NULL,
    sensitivity      TEXT NOT NULL,
    untrusted_output BIGINT NOT NULL,
    group_names      TEXT NOT NULL
);

-- kind is tool (MCP) or route (HTTP).
CREATE TABLE tool_entries (
    server           TEXT NOT NULL REFERENCES tool_servers(name),
    kind             TEXT NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    sensitivity      TEXT NOT NULL,
    untrusted_output BIGINT NOT NULL,
    group_names      TEXT NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    PRIMARY KEY (server, kind, name)
);

-- Requests the shadow set decided differently from the live set. The
-- reasons are JSON lists of policy ids.
CREATE TABLE policy_shadow_diffs (
    decision_id    TEXT PRIMARY KEY,
    shadow_version BIGINT NOT NULL,
    live_version   BIGINT NOT NULL,
    time           BIGINT NOT NULL,
    principal      TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource       TEXT NOT NULL,
    live_allow     BIGINT NOT NULL,
    shadow_allow   BIGINT NOT NULL,
    live_reasons   TEXT NOT NULL,
    shadow_reasons TEXT NOT NULL
);
CREATE INDEX policy_shadow_diffs_version ON policy_shadow_diffs (shadow_version, time);

-- How many real requests each shadow version was evaluated for, and how
-- many differences could not be stored.
CREATE TABLE policy_shadow_stats (
    shadow_version BIGINT PRIMARY KEY,
    evaluated      BIGINT NOT NULL,
    unrecorded     BIGINT NOT NULL
);
