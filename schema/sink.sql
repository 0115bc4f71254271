-- outbox-sink: its own tables in the read-model database. The sink creates them itself at start-up
-- (database.create_tables = true, the default); apply this file instead when its role may not create tables,
-- and set create_tables = false. Idempotent: psql -v ON_ERROR_STOP=1 -f schema/sink.sql
-- (a different database.schema: replace "public." below).

-- Where each consumer group is, per partition: the offset of the next event to apply. Written in the same
-- transaction as the read-model changes of a batch, so what is applied and where to resume always agree.
-- The sink writes it conditionally (only if it still holds the value the sink last read or wrote), so two
-- instances of a group can never both apply the same events.
CREATE TABLE IF NOT EXISTS public.outbox_sink_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Event ids already applied, for [deduplication] enabled = true: an event whose "id" header is here is skipped
-- (e.g. published twice after a relay crash). Pruned after deduplication.retention_hours.
CREATE TABLE IF NOT EXISTS public.outbox_sink_processed_events (
    consumer_group text        NOT NULL,
    event_id       text        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX IF NOT EXISTS outbox_sink_processed_events_age
    ON public.outbox_sink_processed_events (consumer_group, processed_at);

-- A least-privilege role for the sink: it reads and writes its own tables and whatever the projections touch.
--   CREATE ROLE outbox_sink LOGIN;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON public.outbox_sink_offsets, public.outbox_sink_processed_events
--     TO outbox_sink;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON <read-model tables> TO outbox_sink;
