-- What calling a tool or route does (catalog effects): 'read' or 'write'.
-- Existing entries were never declared read-only, so they are writes.
ALTER TABLE tool_entries ADD COLUMN effects TEXT NOT NULL DEFAULT 'write';
