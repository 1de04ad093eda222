-- Tags of events, for dynamic consistency boundaries: they live in the
-- event's metadata (`metadata -> 'tags'`, a JSON array of strings), and this
-- index finds the events carrying a set of tags (`@>`). Partial: events
-- without tags (most, in a store without boundaries) cost it nothing.
CREATE INDEX events_tags_idx ON events USING gin ((metadata -> 'tags') jsonb_path_ops) WHERE metadata ? 'tags';
