-- The demo's read model, kept up to date by outbox-sink with examples/sink.toml from the demo's events:
--   outbox.event.order     OrderCreated {orderId, customerId, total}, OrderCancelled {orderId, customerId}
--   outbox.event.customer  CustomerCreated {customerId, name}
-- Idempotent: psql -v ON_ERROR_STOP=1 -f schema/read_model.sql

-- Every order of a customer, newest state.
CREATE TABLE IF NOT EXISTS public.customer_order_history (
    order_id     text          PRIMARY KEY,
    customer_id  text          NOT NULL,
    total        numeric(12,2) NOT NULL CHECK (total >= 0),
    status       text          NOT NULL,             -- created | cancelled
    created_at   timestamptz   NOT NULL DEFAULT now(),
    updated_at   timestamptz   NOT NULL DEFAULT now(),
    event_id     text,                               -- the event that last changed the row
    source       text                                -- topic/partition/offset of that event
);
CREATE INDEX IF NOT EXISTS customer_order_history_customer ON public.customer_order_history (customer_id);

-- How many orders each customer placed and cancelled: a counter, incremented once per event, which is what makes
-- a duplicate application visible.
CREATE TABLE IF NOT EXISTS public.customer_order_counts (
    customer_id      text    PRIMARY KEY,
    name             text,
    orders_created   integer NOT NULL DEFAULT 0,
    orders_cancelled integer NOT NULL DEFAULT 0,
    total_spent      numeric(14,2) NOT NULL DEFAULT 0
);
