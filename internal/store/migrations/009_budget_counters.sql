-- Budget counters every gateway shares: calls and response bytes per
-- server, agent and task, and per task. A spend is one transaction, so N
-- gateways together never exceed a limit.
CREATE TABLE budget_counters (
    key  TEXT PRIMARY KEY,
    used BIGINT NOT NULL
);
