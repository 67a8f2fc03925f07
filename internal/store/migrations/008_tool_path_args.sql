-- A tool's arguments that must be canonical paths (catalog path_args), as
-- a JSON array of names.
ALTER TABLE tool_entries ADD COLUMN path_args TEXT NOT NULL DEFAULT '[]';
