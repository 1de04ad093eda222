-- Browsing the store (eslab_core::Explore, the console): the events of one
-- request by their correlation id, in position order. Events without one are
-- not indexed. (The streams of a category are a range of the
-- (stream_id, stream_version) index; categories a skip scan of
-- events_category_position.)
CREATE INDEX events_correlation ON events (json_extract(metadata, '$.correlation_id'), global_position)
    WHERE json_extract(metadata, '$.correlation_id') IS NOT NULL;
