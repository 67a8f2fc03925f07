-- The decision id an agent is told when it is refused (and every record of
-- that decision carries), indexed so that an operator can find it:
-- 'bulkhead audit search --decision-id ID'.
ALTER TABLE audit_events ADD COLUMN decision_id TEXT;
CREATE INDEX audit_events_decision_id ON audit_events (decision_id);
