-- The eslab event store. Names are unqualified: the store runs migrations with
-- `search_path` set to its schema, so every table (and `_sqlx_migrations`) lands there.

-- One row per event. The feed is ordered by (transaction_id, global_position)
-- and read only below the oldest in-flight transaction (see the crate docs):
-- ordering by global_position alone would skip events of a transaction that
-- commits after a later-numbered one.
CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text NOT NULL,
    category        text NOT NULL,
    stream_version  bigint NOT NULL CHECK (stream_version > 0),
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    schema_version  integer NOT NULL,
    payload         jsonb NOT NULL,
    metadata        jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_feed_idx ON events (transaction_id, global_position);
CREATE INDEX events_category_feed_idx ON events (category, transaction_id, global_position);

-- The current version of every stream: the row an append locks (FOR UPDATE)
-- to check its expectation, and the row a stream's creator inserts.
CREATE TABLE streams (
    stream_id text PRIMARY KEY,
    version   bigint NOT NULL CHECK (version > 0)
);

-- The latest snapshot per stream.
CREATE TABLE snapshots (
    stream_id            text PRIMARY KEY,
    stream_version       bigint NOT NULL,
    state_schema_version integer NOT NULL,
    state                jsonb NOT NULL,
    taken_at             timestamptz NOT NULL
);

-- Named feed checkpoints (the pair transaction_id, global_position) and the
-- lease of the single runner that owns each.
CREATE TABLE checkpoints (
    name            text PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT '0',
    global_position bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    owner           text,
    lease_until     timestamptz
);
