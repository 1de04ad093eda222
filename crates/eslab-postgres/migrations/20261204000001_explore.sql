-- Browsing the store (eslab_core::Explore, the console). The streams of a
-- category are a range of stream ids in byte order, whatever the database's
-- collation (this index is only written when a stream is created: the
-- version updates of an append leave it alone). The events of one request
-- are found by their correlation id, in position order; events without one
-- are not indexed.
CREATE INDEX streams_id_bytes_idx ON streams (stream_id COLLATE "C");
CREATE INDEX events_correlation_idx ON events ((metadata ->> 'correlation_id'), global_position)
    WHERE metadata ? 'correlation_id';
