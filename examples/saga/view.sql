-- The CQRS view (examples/saga): orders with their customer's name and credit state, a read model no service owns,
-- kept by view-sink.toml from both services' events (saga.order.events, saga.customer.events).
-- The tables are created unqualified, in the first schema of search_path, so that a new version of the read model
-- can be built beside the live one (README "Rebuilding a read model"):
--   psql -v ON_ERROR_STOP=1 -d saga_view -c 'CREATE SCHEMA view_v1'
--   PGOPTIONS='-c search_path=view_v1' psql -v ON_ERROR_STOP=1 -d saga_view -f view.sql
-- Events of one order arrive in order (one key, one partition), and so do one customer's; but an order's events
-- and its customer's come on two topics, in any order relative to each other. So every projection is an upsert
-- that fills in only the columns its event knows.

CREATE TABLE customers_view (
    customer_id  text PRIMARY KEY,
    name         text NOT NULL,
    credit_limit numeric(12,2)
);

CREATE TABLE orders_view (
    order_id      text PRIMARY KEY,
    customer_id   text,
    customer_name text,                -- from CustomerCreated, whichever came first
    total         numeric(12,2),
    saga          text,                -- choreography | orchestration
    status        text,                -- PENDING | APPROVED | REJECTED | CANCELLED (Order service events)
    credit_state  text,                -- RESERVED | REJECTED | RELEASED (Customer service events)
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_view_customer ON orders_view (customer_id);
