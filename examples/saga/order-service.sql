-- The Order service's database (examples/saga): its orders, the saga instances its orchestrator keeps, and its two
-- outbox tables, which the Order service's relay (order-relay.toml) publishes:
--   outbox         domain events  -> topic saga.order.events      (OrderCreated, OrderApproved, OrderRejected,
--                                                                  OrderCancelled; key = the order id)
--   saga_messages  commands       -> topic saga.<destination>      (ReserveCredit, ReleaseCredit to
--                                                                  customer.commands; key = the order id)
-- The Order service's "application" is the two functions at the end (place_order, cancel_order): each changes the
-- orders and writes what it means into an outbox table in the same transaction. Everything the service does in
-- reaction to other services' messages is in order-sink.toml, as outbox-sink projections: no message-handling code.
-- Apply once to an empty database: psql -v ON_ERROR_STOP=1 -d saga_order -f order-service.sql

CREATE TABLE orders (
    id           text          PRIMARY KEY,
    customer_id  text          NOT NULL,
    total        numeric(12,2) NOT NULL CHECK (total > 0),
    saga         text          NOT NULL CHECK (saga IN ('choreography', 'orchestration')),
    status       text          NOT NULL DEFAULT 'PENDING'
                               CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED', 'CANCELLED')),
    reason       text,                                          -- why it was rejected
    created_at   timestamptz   NOT NULL DEFAULT clock_timestamp(),
    decided_at   timestamptz,                                   -- APPROVED or REJECTED at
    cancelled_at timestamptz
);
CREATE INDEX orders_pending ON orders (id) WHERE status = 'PENDING';

-- The orchestrator's state: one row per saga instance. CreateOrder: RESERVING_CREDIT -> APPROVED | REJECTED;
-- CancelOrder (the compensation of an approved order): RELEASING_CREDIT -> COMPLETED.
CREATE TABLE saga_instances (
    id              text        PRIMARY KEY,                  -- <order id>:create, <order id>:cancel
    saga_type       text        NOT NULL CHECK (saga_type IN ('CreateOrder', 'CancelOrder')),
    order_id        text        NOT NULL REFERENCES orders (id),
    state           text        NOT NULL CHECK (state IN ('RESERVING_CREDIT', 'APPROVED', 'REJECTED',
                                                          'RELEASING_CREDIT', 'COMPLETED')),
    last_message_id text,                                     -- the reply that last advanced it
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Domain events. Debezium's outbox columns, plus two the relay copies into headers when they are not NULL:
-- saga_id (the saga instance an event belongs to) and causation_id (the id of the event or reply that caused it).
CREATE TABLE outbox (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb       NOT NULL,
    saga_id       text,
    causation_id  text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Command messages to other services: destination is the channel (the relay's topic template makes it
-- saga.<destination>), reply_to the channel the answer goes to (a header).
CREATE TABLE saga_messages (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    destination   text        NOT NULL CHECK (destination IN ('customer.commands')),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb       NOT NULL,
    saga_id       text,
    causation_id  text,
    reply_to      text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Place an order. Choreography: the OrderCreated event is all it takes (the Customer service reacts to it).
-- Orchestration: the orchestrator also starts a CreateOrder saga instance and sends ReserveCredit with
-- reply_to = order.replies. OrderCreated is published either way (the CQRS view reads it); its "saga" field tells
-- the Customer service's choreography handler to leave orchestrated orders to the orchestrator.
CREATE FUNCTION place_order(p_order_id text, p_customer_id text, p_total numeric, p_saga text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  body jsonb;
BEGIN
  INSERT INTO orders (id, customer_id, total, saga) VALUES (p_order_id, p_customer_id, p_total, p_saga);
  body := jsonb_build_object('orderId', p_order_id, 'customerId', p_customer_id, 'total', p_total, 'saga', p_saga);
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', p_order_id, 'OrderCreated', body);
  IF p_saga = 'orchestration' THEN
    INSERT INTO saga_instances (id, saga_type, order_id, state)
    VALUES (p_order_id || ':create', 'CreateOrder', p_order_id, 'RESERVING_CREDIT');
    INSERT INTO saga_messages (destination, aggregatetype, aggregateid, type, payload, saga_id, reply_to)
    VALUES ('customer.commands', 'order', p_order_id, 'ReserveCredit',
            jsonb_build_object('orderId', p_order_id, 'customerId', p_customer_id, 'amount', p_total),
            p_order_id || ':create', 'order.replies');
  END IF;
END $$;

-- Cancel an approved order: the compensating step. The order is CANCELLED at once; its credit is released by the
-- Customer service, on OrderCancelled (choreography) or on the orchestrator's ReleaseCredit (a CancelOrder saga).
-- Returns false (and changes nothing) unless the order is APPROVED.
CREATE FUNCTION cancel_order(p_order_id text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  o orders;
BEGIN
  UPDATE orders SET status = 'CANCELLED', cancelled_at = clock_timestamp()
  WHERE id = p_order_id AND status = 'APPROVED'
  RETURNING * INTO o;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
  VALUES ('order', o.id, 'OrderCancelled',
          jsonb_build_object('orderId', o.id, 'customerId', o.customer_id, 'total', o.total, 'saga', o.saga));
  IF o.saga = 'orchestration' THEN
    INSERT INTO saga_instances (id, saga_type, order_id, state)
    VALUES (o.id || ':cancel', 'CancelOrder', o.id, 'RELEASING_CREDIT');
    INSERT INTO saga_messages (destination, aggregatetype, aggregateid, type, payload, saga_id, reply_to)
    VALUES ('customer.commands', 'order', o.id, 'ReleaseCredit',
            jsonb_build_object('orderId', o.id, 'customerId', o.customer_id, 'amount', o.total),
            o.id || ':cancel', 'order.replies');
  END IF;
  RETURN true;
END $$;
