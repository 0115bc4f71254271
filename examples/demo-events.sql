-- Sample events of a small order/customer domain, for scripts/demo (psql -v ON_ERROR_STOP=1 -f ...).
-- Each business change and its outbox event are written in ONE transaction: both commit, or neither does.
-- Safe to run again: every run uses new order ids (the `run` variable, set by scripts/demo or below).

\if :{?run}
\else
  \set run `date +%H%M%S`
\endif
\set order_id 'o-' :run
\set lost_order_id 'o-' :run '-rolled-back'

SET client_min_messages = warning;  -- quiet "already exists" notices on a second run

CREATE TABLE IF NOT EXISTS customers (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id          text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES customers (id),
    total       numeric(10, 2) NOT NULL,
    status      text NOT NULL
);

-- 1. A customer registers (or updates her e-mail): state change + CustomerRegistered, one transaction.
BEGIN;
INSERT INTO customers (id, name, email) VALUES ('c-7', 'Ada Lovelace', 'ada@example.com')
    ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email;
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('customer', 'c-7', 'CustomerRegistered',
        jsonb_build_object('customerId', 'c-7', 'name', 'Ada Lovelace', 'email', 'ada@example.com'));
COMMIT;

-- 2. She places an order: the order row + OrderPlaced.
BEGIN;
INSERT INTO orders (id, customer_id, total, status) VALUES (:'order_id', 'c-7', 42.50, 'placed');
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('order', :'order_id', 'OrderPlaced',
        jsonb_build_object('orderId', :'order_id', 'customerId', 'c-7', 'total', 42.50));
COMMIT;

-- 3. An order that fails validation and is rolled back: its OrderPlaced event is never published.
BEGIN;
INSERT INTO orders (id, customer_id, total, status) VALUES (:'lost_order_id', 'c-7', 99999.00, 'placed');
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('order', :'lost_order_id', 'OrderPlaced',
        jsonb_build_object('orderId', :'lost_order_id', 'customerId', 'c-7', 'total', 99999.00));
ROLLBACK;

-- 4. The order is paid. The event goes out as a transactional logical decoding message instead of an outbox row
--    (nothing is stored; published only if the transaction commits), with the relay's prefix "outbox".
BEGIN;
UPDATE orders SET status = 'paid' WHERE id = :'order_id';
SELECT pg_logical_emit_message(true, 'outbox', json_build_object(
    'id', gen_random_uuid(),
    'aggregatetype', 'order',
    'aggregateid', :'order_id',
    'type', 'OrderPaid',
    'payload', json_build_object('orderId', :'order_id', 'amount', 42.50, 'method', 'card'))::text) AS emitted \gset
COMMIT;

-- 5. It ships; the outbox row is deleted again in the same transaction (an outbox needs no history: the insert
--    alone reaches the WAL, and DELETE is never published).
BEGIN;
UPDATE orders SET status = 'shipped' WHERE id = :'order_id';
INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
VALUES ('order', :'order_id', 'OrderShipped', jsonb_build_object('orderId', :'order_id', 'carrier', 'DHL'));
DELETE FROM outbox WHERE aggregateid = :'order_id' AND type = 'OrderShipped';
COMMIT;
