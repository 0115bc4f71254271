-- outbox-relay: the outbox table, its publication, a least-privilege role for the relay (outbox_relay) and a role
-- that may publish events (outbox_writer).
-- Column names are Debezium's outbox event router defaults, so a team moving from Debezium keeps its schema.
-- Idempotent: safe to apply again (psql -v ON_ERROR_STOP=1 -f schema/outbox.sql).

CREATE TABLE IF NOT EXISTS public.outbox (
    id            uuid         PRIMARY KEY DEFAULT gen_random_uuid(),  -- Kafka header "id"
    aggregatetype varchar(255) NOT NULL,   -- routes the topic: outbox.event.<aggregatetype>
    aggregateid   varchar(255) NOT NULL,   -- Kafka key: events of one aggregate keep their order
    type          varchar(255) NOT NULL,   -- the event type, e.g. OrderCreated (copy to a header by config)
    payload       jsonb,                   -- the Kafka value, as stored
    created_at    timestamptz  NOT NULL DEFAULT now()
);

-- The relay reads only what this publication carries: inserts into the outbox tables.
-- UPDATE, DELETE and TRUNCATE are not published, so deleting outbox rows (right after inserting them, or by
-- a cleanup job) never reaches Kafka.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outbox_relay') THEN
    CREATE PUBLICATION outbox_relay FOR TABLE public.outbox WITH (publish = 'insert');
  END IF;
END $$;

-- A least-privilege role for the relay: it may log in, stream WAL (REPLICATION) and read the outbox tables
-- (SELECT), nothing else. What the relay runs as this role, on PostgreSQL 13 to 18:
--  * CREATE_REPLICATION_SLOT and START_REPLICATION (pgoutput) on its replication connection: needs REPLICATION;
--  * catalog reads (pg_class, pg_namespace, pg_publication, pg_publication_tables, pg_replication_slots) and, for
--    the lag metric, pg_current_wal_lsn() on a normal connection: PostgreSQL lets every role do these.
-- SELECT on the outbox: nothing in the relay needs it (pgoutput reads rows from the WAL and checks no table
-- privilege), and it exposes nothing more: every outbox row is an event meant for Kafka, which the relay streams
-- anyway. It lets whoever runs the relay look at what the outbox holds with the relay's own credentials.
-- It cannot create the publication (CREATE PUBLICATION ... FOR TABLE needs ownership of the tables and CREATE on the
-- database): this file creates it; give the relay `create_publication = false`. Outbox tables added later: run, as
-- their owner, ALTER PUBLICATION outbox_relay ADD TABLE <table>; GRANT SELECT ON <table> TO outbox_relay;
-- Set its password out of band (ALTER ROLE outbox_relay PASSWORD '...'). pg_hba.conf must allow it a connection to
-- the database: its logical replication connection matches the database name like a normal connection (the lag
-- probe's), e.g.:
--   host  <dbname>  outbox_relay  10.0.0.0/8  scram-sha-256
-- and give it no line for `replication` (physical replication: with it, a REPLICATION role could stream the WAL of
-- every database of the cluster).
-- Roles are cluster-wide: another database's run of this file may create them at the same moment, hence the
-- exception blocks.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
    BEGIN
      CREATE ROLE outbox_relay WITH LOGIN REPLICATION;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO outbox_relay', current_database());
END $$;
GRANT SELECT ON public.outbox TO outbox_relay;

-- Who may publish events. The relay publishes whatever reaches the outbox, so writing to it is publishing:
--  * an outbox row: INSERT on the outbox table (no role but the owner has it until granted);
--  * with [messages] enabled in the relay: pg_logical_emit_message(). PostgreSQL grants EXECUTE on it to PUBLIC,
--    so any login could publish any event; it is revoked here (every overload: text and bytea content, and the
--    `flush` variant of PostgreSQL 17) and granted to outbox_writer. Function privileges are per database: this
--    applies to the database this file runs in (run it as a superuser, who owns the pg_catalog functions).
-- outbox_writer cannot log in: grant it to the roles of the services that publish, e.g.
--   GRANT outbox_writer TO orders_service;
DO $$
DECLARE
  fn regprocedure;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_writer') THEN
    BEGIN
      CREATE ROLE outbox_writer NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END IF;
  FOR fn IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'pg_logical_emit_message'
                                                  AND pronamespace = 'pg_catalog'::regnamespace LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_writer', fn);
  END LOOP;
END $$;
GRANT USAGE ON SCHEMA public TO outbox_writer;
GRANT INSERT ON public.outbox TO outbox_writer;

-- Publishing an event: insert it in the same transaction as the state change.
--   BEGIN;
--   INSERT INTO orders (id, customer_id, total) VALUES ('o-1001', 'c-7', 42.50);
--   INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
--   VALUES ('order', 'o-1001', 'OrderCreated', '{"orderId":"o-1001","customerId":"c-7","total":42.50}');
--   COMMIT;
--
-- An outbox without a table: a transactional logical decoding message with the prefix the relay is configured
-- with (default "outbox"), published only if its transaction commits.
--   SELECT pg_logical_emit_message(true, 'outbox',
--     '{"id":"6f1c5a3e-0c1e-4f8e-9b7a-2a4d1c0e9f11","aggregatetype":"customer","aggregateid":"c-7",'
--     '"type":"CustomerRenamed","payload":{"customerId":"c-7","name":"Ada"}}');
