-- The Customer service's database (examples/saga): customers with a credit limit, the credit reserved for orders,
-- and its two outbox tables, which the Customer service's relay (customer-relay.toml) publishes:
--   outbox         domain events -> topic saga.customer.events  (CustomerCreated, CreditReserved,
--                                                               CreditLimitExceeded, CreditReleased;
--                                                               key = the customer id)
--   saga_messages  replies       -> topic saga.<destination>     (the reply_to channel of the command answered;
--                                                               key = the order id)
-- Reserving and releasing credit happen in customer-sink.toml's projections, in the transaction that also records
-- the consumed offsets and writes the outcome into the outbox: a transactional inbox and outbox.
-- Apply once to an empty database: psql -v ON_ERROR_STOP=1 -d saga_customer -f customer-service.sql

CREATE TABLE customers (
    id              text          PRIMARY KEY,
    name            text          NOT NULL,
    credit_limit    numeric(12,2) NOT NULL CHECK (credit_limit >= 0),
    credit_reserved numeric(12,2) NOT NULL DEFAULT 0,
    -- The saga's invariant, held by the database at every commit, not checked afterwards: a projection that
    -- would over-reserve fails on it (and its event would be dead-lettered, which the tests count).
    CONSTRAINT credit_within_limit CHECK (credit_reserved >= 0 AND credit_reserved <= credit_limit)
);

-- One row per order the service decided on: RESERVED (credit taken), REJECTED (the limit did not allow it, or no
-- such customer), RELEASED (reserved, then given back when the order was cancelled).
CREATE TABLE credit_reservations (
    order_id    text          PRIMARY KEY,     -- a second decision for one order fails here
    customer_id text          NOT NULL,
    amount      numeric(12,2) NOT NULL,
    state       text          NOT NULL CHECK (state IN ('RESERVED', 'REJECTED', 'RELEASED')),
    decided_by  text          NOT NULL,        -- id of the event or command that decided it
    released_by text,                          -- id of the event or command that released it
    decided_at  timestamptz   NOT NULL DEFAULT clock_timestamp()
);

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

-- Replies go where the command's reply_to header says, but only to a reply channel: a command naming any other
-- topic is refused by this constraint (the command is dead-lettered), so a sender cannot use the Customer service
-- to write into another service's command or event topics.
CREATE TABLE saga_messages (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    destination   text        NOT NULL CHECK (destination ~ '^[a-z]+\.replies$'),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb       NOT NULL,
    saga_id       text,
    causation_id  text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The application: register a customer (CustomerCreated carries the name the CQRS view shows).
CREATE FUNCTION create_customer(p_id text, p_name text, p_credit_limit numeric)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO customers (id, name, credit_limit) VALUES (p_id, p_name, p_credit_limit);
  INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
  VALUES ('customer', p_id, 'CustomerCreated',
          jsonb_build_object('customerId', p_id, 'name', p_name, 'creditLimit', p_credit_limit));
END $$;
