-- The demo's read model, kept up to date by outbox-sink with examples/sink.toml from the demo's events
-- (examples/demo-events.sql):
--   outbox.event.order     OrderPlaced (or OrderCreated) {orderId, customerId, total}, OrderPaid {orderId, ...},
--                          OrderShipped {orderId, carrier}, OrderCancelled {orderId, customerId}
--   outbox.event.customer  CustomerRegistered (or CustomerCreated) {customerId, name, ...}
-- Idempotent: psql -v ON_ERROR_STOP=1 -f schema/read_model.sql

-- Every order of a customer, in its latest state.
CREATE TABLE IF NOT EXISTS public.customer_order_history (
    order_id     text          PRIMARY KEY,
    customer_id  text          NOT NULL,
    total        numeric(12,2) NOT NULL CHECK (total >= 0),   -- a negative total is a poison event
    status       text          NOT NULL,                      -- placed | paid | shipped | cancelled
    created_at   timestamptz   NOT NULL DEFAULT now(),
    updated_at   timestamptz   NOT NULL DEFAULT now(),
    event_id     text,                                        -- the event that last changed the row
    source       text                                         -- topic/partition/offset of its first event
);
CREATE INDEX IF NOT EXISTS customer_order_history_customer ON public.customer_order_history (customer_id);

-- Per customer: name and counters, incremented once per event (a double application would show here).
CREATE TABLE IF NOT EXISTS public.customer_order_counts (
    customer_id      text          PRIMARY KEY,
    name             text,
    orders_placed    integer       NOT NULL DEFAULT 0,
    orders_cancelled integer       NOT NULL DEFAULT 0,
    total_spent      numeric(14,2) NOT NULL DEFAULT 0
);
