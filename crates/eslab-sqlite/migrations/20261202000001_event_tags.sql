-- Tags of events, for dynamic consistency boundaries: one row per tag of an
-- event, so that a query finds the events carrying a set of tags by index.
-- The tags also stay in the event's metadata JSON (what readers decode).
-- Rows go with their event (retention deletes events).
CREATE TABLE event_tags (
    tag             TEXT    NOT NULL,
    global_position INTEGER NOT NULL REFERENCES events (global_position) ON DELETE CASCADE,
    PRIMARY KEY (tag, global_position)
) STRICT, WITHOUT ROWID;

CREATE INDEX event_tags_position ON event_tags (global_position);
