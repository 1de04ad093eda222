-- The embedded event store: events (the global feed is the rowid order),
-- the latest snapshot per stream, and named feed checkpoints with their lease.

-- `global_position` aliases the rowid. Appends run one at a time (BEGIN
-- IMMEDIATE), so positions are assigned and committed in the same order and a
-- feed reader never sees a later position before an earlier one. Events are
-- never deleted, so positions are never reused.
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    category        TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id        BLOB    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL, -- JSON
    metadata        TEXT    NOT NULL, -- JSON
    recorded_at     TEXT    NOT NULL, -- RFC 3339, UTC
    UNIQUE (stream_id, stream_version)
) STRICT;

-- The per-category feed.
CREATE INDEX events_category_position ON events (category, global_position);

CREATE TABLE snapshots (
    stream_id            TEXT    PRIMARY KEY,
    stream_version       INTEGER NOT NULL,
    state_schema_version INTEGER NOT NULL,
    state                TEXT    NOT NULL, -- JSON
    taken_at             TEXT    NOT NULL  -- RFC 3339, UTC
) STRICT;

-- `transaction_id` is kept for parity with the Postgres checkpoint; the SQLite
-- feed leaves it at 0. `lease_until` is in Unix milliseconds.
CREATE TABLE checkpoints (
    name            TEXT    PRIMARY KEY,
    transaction_id  INTEGER NOT NULL DEFAULT 0,
    global_position INTEGER NOT NULL DEFAULT 0,
    updated_at      TEXT    NOT NULL,
    owner           TEXT,
    lease_until     INTEGER
) STRICT;
